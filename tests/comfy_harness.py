"""Helpers to run the DiTFuse pack inside the real ComfyUI that scripts/setup_comfyui.sh installs under
.comfyui/ (in-process executor, a real server on 127.0.0.1, and availability checks).

Not a test module (no test_ prefix); imported by tests/test_comfy*.py and scripts/make_workflows.py.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOME = Path(os.environ.get("DITFUSE_COMFYUI_HOME", ROOT / ".comfyui"))
COMFY_DIR = HOME / "ComfyUI"
STUBS = HOME / "stubs"
EXTRA_YAML = HOME / "extra_model_paths.yaml"
PACK_LINK = HOME / "custom_nodes" / "ComfyUI-DiTFuse"
WORKFLOWS = ROOT / "workflows"
PACK_NAME = PACK_LINK.name
CHROMIUM = os.environ.get("DITFUSE_CHROMIUM", "/usr/bin/chromium")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get("DITFUSE_REQUIRE_COMFYUI") == "1"


def comfy_missing_reason() -> str | None:
    if not (COMFY_DIR / "main.py").is_file():
        return f"ComfyUI not installed at {COMFY_DIR} (run `make comfyui`)"
    if not EXTRA_YAML.is_file() or not PACK_LINK.exists():
        return "pack not wired into ComfyUI (run `make comfyui`)"
    try:
        import aiohttp  # noqa: F401
        import comfyui_frontend_package  # noqa: F401
    except ImportError as e:
        return f"ComfyUI requirements missing ({e}); run `make comfyui`"
    return None


def browser_missing_reason() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} not found (apt-get install chromium; `make comfyui` does it)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright not installed (`make comfyui` installs it)"
    return None


def require(reason: str | None) -> None:
    """Skip when really unavailable; in CI (CI=true) a missing ComfyUI/browser is a failure, not a skip."""
    import pytest

    if reason is None:
        return
    if in_ci():
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def pack_adapters():
    """nodes/adapters.py (ComfyUI-independent helpers), loaded by path under its own name: this repo's
    `nodes/` package must never be imported as top-level `nodes`, which is ComfyUI's module."""
    import importlib.util

    name = "_ditfuse_pack_adapters"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "nodes" / "adapters.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


# ---- in-process ComfyUI -----------------------------------------------------------------------------------
class _Server:
    """The bits of PromptServer that PromptExecutor and progress hooks touch."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.messages: list[tuple[str, dict]] = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


class InProcessComfy:
    """ComfyUI imported into this Python process, with core nodes, comfy_extras and this pack loaded.

    Import order matters: `comfy.cli_args.args.cpu` before comfy.model_management; `utils.extra_config`
    before `nodes` (as main.py does); the ComfyUI folder first on sys.path so its `nodes` module wins over
    this repo's `nodes/` package."""

    _instance: InProcessComfy | None = None

    @classmethod
    def get(cls) -> InProcessComfy:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def __init__(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        comfy = str(COMFY_DIR)
        while comfy in sys.path:
            sys.path.remove(comfy)
        sys.path.insert(0, comfy)
        if str(STUBS) not in sys.path:
            sys.path.append(str(STUBS))
        mod = sys.modules.get("nodes")
        if mod is not None and not str(getattr(mod, "__file__", "")).startswith(comfy):
            raise RuntimeError(f"a foreign 'nodes' module is already imported: {mod}")
        from comfy.cli_args import args

        args.cpu = True
        args.disable_auto_launch = True
        import utils.extra_config  # noqa: F401  (before nodes, like main.py)
        import folder_paths

        utils.extra_config.load_extra_path_config(str(EXTRA_YAML))
        import execution
        import nodes

        self.nodes, self.execution, self.folder_paths = nodes, execution, folder_paths
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
            ok = loop.run_until_complete(nodes.load_custom_node(str(PACK_LINK)))
        finally:
            loop.close()
        if not ok or "DiTFuseFuse" not in nodes.NODE_CLASS_MAPPINGS:
            raise RuntimeError("the DiTFuse pack did not load into ComfyUI (see the log above)")
        self.server = _Server()
        # main.py's cache_args gained keys over time: 0.3.x/0.8.0 read "lru" and "ram"; by 0.33.0
        # PromptExecutor.execute_async also reads cache_args["ram_inactive"] (and, like "ram", in GB, with
        # every cache type). Older versions only .get() the keys they know, so passing all of them is safe.
        # cache_type=False is none of the CacheType values: the classic (hierarchical) cache in every version.
        self.executor = execution.PromptExecutor(self.server, cache_type=False,
                                                 cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
        try:
            import comfyui_version  # the tree's own comfyui_version.py (absent in very old trees)

            self.comfyui_version = comfyui_version.__version__
        except ImportError:
            self.comfyui_version = None

    def cached_output(self, node_id: str):
        """The executor's output-cache entry of a node (execution.CacheEntry, or None). ComfyUI ≤ 0.8 has a
        sync `caches.outputs.get`; newer versions made `get`/`set` coroutines (cache providers) and added a
        sync `get_local` for the in-memory lookup: prefer that, else await what `get` returns."""
        import inspect

        cache = self.executor.caches.outputs
        get_local = getattr(cache, "get_local", None)
        entry = get_local(node_id) if get_local is not None else cache.get(node_id)
        if inspect.isawaitable(entry):
            entry = asyncio.run(entry)
        return entry

    # -- validation and execution
    def validate(self, prompt: dict):
        """execution.validate_prompt → (valid, error, outputs, node_errors)."""
        return asyncio.run(self.execution.validate_prompt(str(uuid.uuid4()), prompt, None))

    def run(self, prompt: dict, fresh: bool = False) -> dict:
        """Validate and execute an API-format prompt. Returns {node_id: outputs tuple/list} of every executed
        node (from the executor's output cache) plus '_ui' (ui outputs) and '_messages'. Raises on failure."""
        valid, err, outputs, node_errors = self.validate(prompt)
        if not valid:
            raise AssertionError(f"prompt invalid: {err} {json.dumps(node_errors, default=str)[:2000]}")
        if fresh:
            self.executor.reset()
        self.server.messages.clear()
        pid = str(uuid.uuid4())
        self.executor.execute(prompt, pid, {}, outputs)
        msgs = list(self.executor.status_messages)
        if not self.executor.success:
            err = [d for e, d in msgs if e == "execution_error"]
            raise AssertionError(f"execution failed: {json.dumps(err, default=str)[:4000]}")
        res = {"_ui": self.executor.history_result.get("outputs", {}), "_messages": msgs}
        for node_id in prompt:
            entry = self.cached_output(node_id)
            if entry is not None:
                res[node_id] = entry.outputs
        return res

    def object_info(self, class_type: str) -> dict:
        """The /object_info entry of one node (the same fields server.py builds)."""
        cls = self.nodes.NODE_CLASS_MAPPINGS[class_type]
        info = {"input": cls.INPUT_TYPES(), "input_order": {k: list(v.keys()) for k, v in cls.INPUT_TYPES().items()},
                "output": list(cls.RETURN_TYPES), "name": class_type,
                "display_name": self.nodes.NODE_DISPLAY_NAME_MAPPINGS.get(class_type, class_type)}
        info["output_name"] = list(getattr(cls, "RETURN_NAMES", None) or info["output"])
        return info


# ---- a real server ----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """`main.py --cpu --listen 127.0.0.1` with the pack loaded from outside ComfyUI's folder."""

    def __init__(self, port: int | None = None, log_path: Path | None = None, env: dict | None = None,
                 extra_yaml: Path | None = None, args: tuple[str, ...] = ()):
        """env: variables set on top of this process's (HF_HUB_OFFLINE is 1 unless given); extra_yaml: instead of
        the harness's extra_model_paths.yaml; args: more main.py arguments (e.g. --lowvram)."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or (HOME / f"server-{self.port}.log")
        self.proc: subprocess.Popen | None = None
        self.env, self.extra_yaml, self.args = dict(env or {}), extra_yaml or EXTRA_YAML, tuple(args)

    def start(self, timeout: float = 180.0) -> ComfyServer:
        env = dict(os.environ)
        env["HF_HUB_OFFLINE"] = "1"
        env.update(self.env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in [env.get("PYTHONPATH", ""), str(STUBS)] if p)
        # --lowvram / --novram / --gpu-only exclude --cpu (argparse): those runs use the GPU
        cpu = [] if {"--lowvram", "--novram", "--gpu-only"} & set(self.args) else ["--cpu"]
        cmd = [sys.executable, "main.py", *cpu, "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", "--extra-model-paths-config", str(self.extra_yaml),
               "--output-directory", str(HOME / "output"), "--input-directory", str(HOME / "input"), *self.args]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=COMFY_DIR, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited ({self.proc.returncode}); log: {self.log_tail()}")
            try:
                self.get("/system_stats", timeout=2)
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout}s; log: {self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text()[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if getattr(self, "_log", None):
            self._log.close()

    # -- HTTP
    def request(self, method: str, path: str, body=None, timeout: float = 30.0):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def get(self, path: str, timeout: float = 30.0):
        status, body = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise urllib.error.URLError(f"GET {path}: HTTP {status}")
        return body

    def post_prompt(self, prompt: dict, client_id: str | None = None):
        return self.request("POST", "/prompt", {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex})

    def wait_history(self, prompt_id: str, timeout: float = 300.0) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            hist = self.get(f"/history/{prompt_id}")
            if prompt_id in hist and hist[prompt_id].get("status", {}).get("completed") is not None:
                st = hist[prompt_id]["status"]
                if st.get("status_str") in ("success", "error") or st.get("completed"):
                    return hist[prompt_id]
            time.sleep(0.3)
        raise TimeoutError(f"prompt {prompt_id} not finished within {timeout}s; log: {self.log_tail()}")


# ---- workflows -------------------------------------------------------------------------------------------
# The shipped workflows by task. ComfyUI's template browser shows a file's name as the card's title (and, with
# - and _ as spaces, as its description): the names read as tasks.
WF = {"ivif": "DiTFuse infrared and visible fusion", "mff": "DiTFuse multi-focus fusion",
      "mef": "DiTFuse multi-exposure fusion", "control": "DiTFuse brightness and contrast control",
      "segmentation": "DiTFuse segmentation overlay", "chain": "DiTFuse node chain with a core latent upscale"}


def workflow_names() -> list[str]:
    return sorted(p.stem for p in WORKFLOWS.glob("*.json"))


def load_api(name: str) -> dict:
    return json.loads((WORKFLOWS / "api" / f"{WF.get(name, name)}.json").read_text())


def load_ui(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{WF.get(name, name)}.json").read_text())


FAST = {"steps": 2, "max_side": 64}


def fast_prompt(prompt: dict, **over) -> dict:
    """A copy of an API prompt with tiny sampling settings on every DiTFuse node (fast CPU tests)."""
    vals = {**FAST, **over}
    out = json.loads(json.dumps(prompt))
    for node in out.values():
        if node["class_type"].startswith("DiTFuse"):
            for k, v in vals.items():
                if k in node["inputs"] and not isinstance(node["inputs"][k], list):
                    node["inputs"][k] = v
    return out


def artifacts_dir() -> Path:
    d = Path(os.environ.get("DITFUSE_ARTIFACTS", ROOT / "out" / "comfyui-tests"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def which(name: str) -> str | None:
    return shutil.which(name)


_SHARED: ComfyServer | None = None


def shared_server() -> ComfyServer:
    """One ComfyUI server for the whole test session (started on first use, stopped at exit)."""
    global _SHARED
    if _SHARED is None:
        import atexit

        _SHARED = ComfyServer(log_path=artifacts_dir() / "comfyui-server.log").start()
        atexit.register(_SHARED.stop)
        # first-run frontend dialogs off (templates browser, tutorial), like a returning user
        _SHARED.request("POST", "/settings", {"Comfy.TutorialCompleted": True,
                                              "Comfy.Workflow.ShowMissingModelsWarning": True})
    return _SHARED
