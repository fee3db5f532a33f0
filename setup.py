"""Build hook only; the metadata lives in pyproject.toml.

The example pairs stay in example_images/ at the repository root (the ComfyUI pack runs from a git clone too);
a built wheel carries a copy as ditfuse_core/assets/example_images, and an sdist carries example_images/ so a
wheel built from it gets the copy too. ditfuse_core.examples finds either.
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

SOURCE = Path("example_images")
TARGET = Path("ditfuse_core", "assets", "example_images")


def _example_files() -> list[Path]:
    files = sorted(p for p in SOURCE.glob("*") if p.is_file() and not p.name.startswith("."))
    if not (SOURCE / "pairs.json") in files:
        raise SystemExit(f"{SOURCE.resolve()}/pairs.json is missing: build from the repository or its sdist")
    return files


class BuildPy(build_py):
    def run(self):
        super().run()
        if not self.editable_mode:  # editable: ditfuse_core.examples reads the repository's example_images/
            self.mkpath(str(Path(self.build_lib, TARGET)))
            for f in _example_files():
                self.copy_file(str(f), str(Path(self.build_lib, TARGET, f.name)))

    def get_outputs(self, include_bytecode=True):
        extra = [] if self.editable_mode else [str(Path(self.build_lib, TARGET, f.name)) for f in _example_files()]
        return super().get_outputs(include_bytecode) + extra


class Sdist(sdist):
    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, list(files) + [str(f) for f in _example_files()])


setup(cmdclass={"build_py": BuildPy, "sdist": Sdist})
