"""Import-only torchvision stand-in for running ComfyUI beside this project's CPU torch wheel.

Why: PyPI's torchvision does not load beside the CPU torch 2.13.0 wheel ('operator torchvision::nms does not
exist'), and ComfyUI (Cascade/Cosmos/ACE model files) and transformers (image utils) import torchvision at
module level although the DiTFuse nodes never call it. Installed by scripts/setup_comfyui.sh as
.comfyui/stubs/torchvision.py, on sys.path only for the ComfyUI processes.

Every `import torchvision.x.y` and every attribute resolves to a placeholder; calling a placeholder (or
using it as a number / iterating it) raises RuntimeError naming what was used.
"""
import importlib.abc
import importlib.machinery
import sys
import types

__version__ = "0.0.0+ditfuse.standin"
DITFUSE_STANDIN = True


def _fail(name):
    raise RuntimeError(f"{name} is not available: this ComfyUI runs with an import-only torchvision stand-in "
                       "(install a torchvision that matches your torch to use it)")


class _Placeholder:
    def __init__(self, name):
        object.__setattr__(self, "_name", name)

    def __getattr__(self, attr):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return _Placeholder(f"{self._name}.{attr}")

    def __call__(self, *a, **k):
        _fail(self._name)

    def __iter__(self):
        _fail(self._name)

    def __hash__(self):
        return hash(self._name)

    def __eq__(self, other):
        return isinstance(other, _Placeholder) and other._name == self._name

    def __mro_entries__(self, bases):  # `class X(torchvision.something)` gets a plain base
        return (object,)

    def __repr__(self):
        return f"<torchvision stand-in {self._name}>"


def _module_getattr(modname):
    def __getattr__(attr):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return _Placeholder(f"{modname}.{attr}")

    return __getattr__


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        m = types.ModuleType(spec.name)
        m.__path__ = []
        m.__getattr__ = _module_getattr(spec.name)
        return m

    def exec_module(self, module):
        pass


__path__ = []  # a package, so `import torchvision.transforms` asks the finder below
__getattr__ = _module_getattr("torchvision")
if not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.append(_Finder())
