"""`ditfuse download` (issue #27) against a local Hub on 127.0.0.1 that serves a tiny model in the published
layouts: fresh folder -> complete model -> loads -> fuses; dropped and interrupted downloads resume (Range);
offline and corrupted downloads end in one clear error with nothing half-written in place. Never the internet."""
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from ditfuse_core import download as dl
from ditfuse_core.tiny import tiny_transformer, tiny_vae
from ditfuse_core.tokenizer import BUNDLED
from original_format import save_original_folder

ROOT = Path(__file__).resolve().parents[1]
LFS_EXTS = (".safetensors", ".model", ".bin", ".pt")


# ---- a tiny Hub -----------------------------------------------------------------------------------------------
class Hub:
    """The routes `download` uses, as huggingface.co answers them: /api/models/{repo}/revision/{rev}?blobs=True
    (siblings with size, blobId and lfs.sha256) and /{repo}/resolve/{rev}/{path} (X-Repo-Commit, ETag,
    X-Linked-Size, Content-Length, Range -> 206). Knobs: drop[path] = n (the next GET sends n bytes and hangs up),
    broken (paths answered 500), corrupt (paths served with wrong bytes). log: (method, path, Range)."""

    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.repos = {r: {"sha": hashlib.sha1(r.encode()).hexdigest(), "files": f} for r, f in repos.items()}
        self.drop, self.broken, self.corrupt, self.log = {}, set(), set(), []
        hub = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _send(self, code, data=b"", headers=(), body=True):
                self.send_response(code)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _serve(self, body):
                path = self.path.split("?")[0]
                hub.log.append((self.command, path, self.headers.get("Range")))
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
                if m:
                    return hub._api(self, m.group(1), m.group(2) or "main", body)
                m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if m:
                    return hub._resolve(self, *m.groups(), body=body)
                self._send(404, b'{"error": "not found"}', body=body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def _repo(self, h, repo, rev, body):
        r = self.repos.get(repo)
        if r is None:
            h._send(404, b'{"error": "Repository not found"}', [("X-Error-Code", "RepoNotFound")], body)
        elif rev not in ("main", r["sha"]):
            h._send(404, b'{"error": "Invalid rev id"}', [("X-Error-Code", "RevisionNotFound")], body)
        return r

    def _api(self, h, repo, rev, body):
        r = self._repo(h, repo, rev, body)
        if r is None or rev not in ("main", r["sha"]):
            return
        siblings = []
        for name, data in sorted(r["files"].items()):
            s = {"rfilename": name, "size": len(data), "blobId": _git_sha1(data)}
            if name.endswith(LFS_EXTS):
                sha = hashlib.sha256(data).hexdigest()
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n"
                s.update(blobId=_git_sha1(pointer.encode()), lfs={"size": len(data), "sha256": sha,
                                                                  "pointerSize": len(pointer)})
            siblings.append(s)
        info = {"_id": "x", "id": repo, "modelId": repo, "sha": r["sha"], "private": False, "siblings": siblings}
        h._send(200, json.dumps(info).encode(), [("Content-Type", "application/json")], body)

    def _resolve(self, h, repo, rev, name, body):
        r = self._repo(h, repo, rev, body)
        if r is None or rev not in ("main", r["sha"]):
            return
        data = r["files"].get(name)
        if data is None:
            return h._send(404, b"Entry not found", [("X-Error-Code", "EntryNotFound")], body)
        if name in self.broken:
            return h._send(500, b"Internal Error", (), body)
        if name in self.corrupt:
            data = bytes(b ^ 0xFF for b in data[:16]) + data[16:]
        etag = hashlib.sha256(data).hexdigest() if name.endswith(LFS_EXTS) else _git_sha1(data)
        headers = [("X-Repo-Commit", r["sha"]), ("ETag", f'"{etag}"'), ("X-Linked-Etag", f'"{etag}"'),
                   ("X-Linked-Size", str(len(data))), ("Accept-Ranges", "bytes")]
        start, code = 0, 200
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", h.headers.get("Range") or "")
        if m:
            start, end = int(m.group(1)), int(m.group(2) or len(data) - 1)
            headers.append(("Content-Range", f"bytes {start}-{end}/{len(data)}"))
            data, code = data[start:end + 1], 206
        cut = self.drop.pop(name, None) if body else None
        if cut is None:
            return h._send(code, data, headers, body)
        h.send_response(code)  # promise everything, send `cut` bytes, hang up
        for k, v in headers:
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data[:cut])
        h.wfile.flush()
        h.close_connection = True
        h.connection.shutdown(socket.SHUT_RDWR)


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The two repositories' files, as published: OmniGen original layout + peft LoRA, plus files that must
    not be fetched (pickles, README)."""
    src = tmp_path_factory.mktemp("published")
    model = tiny_transformer(seed=3, kv_heads=2)
    save_original_folder(src / "omnigen", model, tiny_vae(seed=4))
    omni = _files(src / "omnigen")
    omni.update({"tokenizer.json": BUNDLED.read_bytes(), "tokenizer_config.json": b'{"model_max_length": 1024}',
                 "special_tokens_map.json": b'{"bos_token": "<s>"}', "README.md": b"# OmniGen\n",
                 ".gitattributes": b"*.safetensors filter=lfs\n", "model.pt": b"\x80\x04pickle",
                 "vae/diffusion_pytorch_model.bin": b"\x80\x04pickle"})
    g = torch.Generator().manual_seed(5)
    d, kv = model.config.hidden_size, model.config.num_key_value_heads * (
        model.config.hidden_size // model.config.num_attention_heads)
    state = {}
    for i in range(model.config.num_layers):
        p = f"base_model.model.llm.layers.{i}.self_attn."
        state[p + "qkv_proj.lora_A.weight"] = torch.randn(4, d, generator=g) * 0.1
        state[p + "qkv_proj.lora_B.weight"] = torch.randn(d + 2 * kv, 4, generator=g) * 0.1
        state[p + "o_proj.lora_A.weight"] = torch.randn(4, d, generator=g) * 0.1
        state[p + "o_proj.lora_B.weight"] = torch.randn(d, 4, generator=g) * 0.1
    save_file(state, str(src / "adapter_model.safetensors"))
    lora_files = {"adapter_model.safetensors": (src / "adapter_model.safetensors").read_bytes(),
                  "adapter_config.json": json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                     "target_modules": ["qkv_proj", "o_proj"]}).encode(),
                  "README.md": b"# DiTFuse\n", "training_args.bin": b"\x80\x04pickle"}
    return {"Shitao/OmniGen-v1": omni, "lijiayangCS/DiTFuse": lora_files}


@pytest.fixture
def hub(published):
    h = Hub(published)
    yield h
    h.stop()


@pytest.fixture
def online(monkeypatch, tmp_path, hub):
    """This process talks to the local Hub only: HF_HUB_OFFLINE=0 (the suite sets 1, and huggingface_hub read it
    at import, which download() overrides per call), the endpoint, home, cache and token all local."""
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for k in ("HF_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    # the network delivers a dropped file's first bytes in pieces, not in one 10 MB read
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 << 10)
    return hub


def _env(endpoint: str, tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_OFFLINE"))}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1",
               NO_PROXY="127.0.0.1,localhost", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **extra)
    return env


def _cli(args, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ditfuse_core.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _expected(published, repo, wanted):
    return {k: v for k, v in published[repo].items() if k in wanted}


# ---- tests ----------------------------------------------------------------------------------------------------
def test_cli_round_trip_fresh_folder_loads_and_fuses(hub, published, tmp_path):
    from ditfuse_core.pipeline import DiTFusePipeline

    root = tmp_path / "models" / "ditfuse"
    r = _cli(["download", "all", "--dir", str(root)], _env(hub.url, tmp_path))
    assert r.returncode == 0, r.stderr
    model, lora = root / "OmniGen-v1", root / "loras" / "DiTFuse"
    assert r.stdout.split() == [str(model), str(lora)]
    # exactly the files the loaders read, byte for byte; no pickles, no README, no work files
    assert _files(model) == _expected(published, "Shitao/OmniGen-v1", dl.MODELS["omnigen-v1"].files)
    assert set(_files(model)) == {"config.json", "model.safetensors", "vae/config.json",
                                  "vae/diffusion_pytorch_model.safetensors", "tokenizer.json",
                                  "tokenizer_config.json", "special_tokens_map.json"}
    assert _files(lora) == _expected(published, "lijiayangCS/DiTFuse", dl.MODELS["ditfuse-lora"].files)
    assert sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) == ["OmniGen-v1", "loras"]

    pipe = DiTFusePipeline.from_pretrained(model, lora=lora, dtype="fp32")
    a = Image.new("RGB", (48, 32), (200, 40, 40))
    b = Image.new("RGB", (48, 32), (20, 20, 220))
    out = pipe.fuse(a, b, task="ivif", steps=2, max_side=64, seed=1)[0]
    assert out.size == (48, 32)

    # a second run finds it complete and does not touch the network
    n = len(hub.log)
    r = _cli(["download", "omnigen-v1", "--dir", str(root)], _env(hub.url, tmp_path))
    assert r.returncode == 0 and r.stdout.strip() == str(model) and "already" in r.stderr
    assert len(hub.log) == n


def test_dropped_connection_resumes_with_range(online, published, tmp_path):
    data = published["Shitao/OmniGen-v1"]["model.safetensors"]
    online.drop["model.safetensors"] = len(data) // 2
    out = dl.download("omnigen-v1", tmp_path, token=False, progress=False)
    assert (out / "model.safetensors").read_bytes() == data
    gets = [rng for m, p, rng in online.log if m == "GET" and p.endswith("/model.safetensors")]
    assert gets[0] is None and len(gets) == 2
    start = int(re.fullmatch(r"bytes=(\d+)-", gets[1]).group(1))
    assert 0 < start <= len(data) // 2


def test_interrupted_run_resumes_on_the_next_run(online, published, tmp_path):
    data = published["Shitao/OmniGen-v1"]["model.safetensors"]
    # the cut's retry (Range) gets a 500: the run ends; the bytes so far stay in the hidden work folder
    online.drop = _DropThen({"model.safetensors": len(data) // 2}, lambda: online.broken.add("model.safetensors"))
    with pytest.raises(dl.DownloadError, match="run again to resume"):
        dl.download("omnigen-v1", tmp_path, token=False, progress=False)
    dest = tmp_path / "OmniGen-v1"
    assert not dest.exists()
    part = tmp_path / ".OmniGen-v1.partial" / ".incomplete" / "model.safetensors"
    kept = part.stat().st_size
    assert 0 < kept < len(data) and part.read_bytes() == data[:kept]

    online.broken.clear()
    online.log.clear()
    out = dl.download("omnigen-v1", tmp_path, token=False, progress=False)
    assert out == dest and (out / "model.safetensors").read_bytes() == data
    assert ("GET", "/Shitao/OmniGen-v1/resolve/" + online.repos["Shitao/OmniGen-v1"]["sha"]
            + "/model.safetensors", f"bytes={kept}-") in online.log
    assert not (tmp_path / ".OmniGen-v1.partial").exists()
    assert _files(out) == _expected(published, "Shitao/OmniGen-v1", dl.MODELS["omnigen-v1"].files)


class _DropThen(dict):
    """drop.pop(name) that also calls `then` (so the request after the cut gets an error)."""

    def __init__(self, d, then):
        super().__init__(d)
        self.then = then

    def pop(self, k, default=None):
        v = super().pop(k, default)
        if v is not None:
            self.then()
        return v


def test_corrupted_file_is_an_error_and_nothing_is_left_in_place(online, tmp_path):
    online.corrupt.add("model.safetensors")
    with pytest.raises(dl.DownloadError, match=r"model\.safetensors: the downloaded bytes do not match the Hub's "
                                               r"sha256"):
        dl.download("omnigen-v1", tmp_path, token=False, progress=False)
    assert not (tmp_path / "OmniGen-v1").exists()
    assert not (tmp_path / ".OmniGen-v1.partial" / "model.safetensors").exists()
    assert not (tmp_path / ".OmniGen-v1.partial" / ".incomplete" / "model.safetensors").exists()
    online.corrupt.clear()  # fixed upstream: the next run completes
    assert dl.is_complete("omnigen-v1", tmp_path) is False
    out = dl.download("omnigen-v1", tmp_path, token=False, progress=False)
    assert dl.is_complete("omnigen-v1", tmp_path) and out == tmp_path / "OmniGen-v1"


def test_a_small_file_is_checked_by_its_git_hash(online, tmp_path):
    online.corrupt.add("adapter_config.json")
    with pytest.raises(dl.DownloadError, match="git blob sha1"):
        dl.download("ditfuse-lora", tmp_path, token=False, progress=False)
    assert not (tmp_path / "loras" / "DiTFuse").exists()


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE=1", "server down"])
def test_offline_is_one_clear_line_exit_2_and_nothing_created(hub, tmp_path, how):
    root = tmp_path / "models" / "ditfuse"
    if how == "server down":
        hub.stop()
        env = _env(hub.url, tmp_path)
    else:
        env = _env(hub.url, tmp_path, HF_HUB_OFFLINE="1")
    r = _cli(["download", "ditfuse-lora", "--dir", str(root)], env)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ditfuse: error: cannot download lijiayangCS/DiTFuse"), r.stderr
    assert str(root / "loras" / "DiTFuse") in lines[0] and "adapter_model.safetensors" in lines[0]
    assert "Traceback" not in r.stderr and not r.stdout
    assert not tmp_path.joinpath("models").exists()
    if how == "HF_HUB_OFFLINE=1":
        assert not any(m == "GET" for m, _, _ in hub.log)


def test_existing_incomplete_folder_is_not_overwritten_without_force(online, tmp_path):
    dest = tmp_path / "loras" / "DiTFuse"
    dest.mkdir(parents=True)
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(dl.DownloadError, match="--force"):
        dl.download("ditfuse-lora", tmp_path, token=False, progress=False)
    assert (dest / "notes.txt").read_text() == "mine"
    out = dl.download("ditfuse-lora", tmp_path, force=True, token=False, progress=False)
    assert sorted(_files(out)) == ["adapter_config.json", "adapter_model.safetensors"]
    assert [p.name for p in (tmp_path / "loras").iterdir() if not p.name.endswith(".lock")] == ["DiTFuse"]


def test_unknown_repo_and_stale_partial(online, tmp_path, monkeypatch):
    monkeypatch.setitem(dl.MODELS, "nope", dl.Known("nobody/nothing", "nothing", ("a.json",)))
    with pytest.raises(dl.DownloadError, match="cannot download nobody/nothing"):
        dl.download("nope", tmp_path, token=False, progress=False)
    assert not (tmp_path / "nothing").exists()
    # a work folder of another commit is discarded, not mixed in
    work = tmp_path / ".OmniGen-v1.partial"
    (work / ".incomplete").mkdir(parents=True)
    (work / ".download.json").write_text(json.dumps({"repo": "Shitao/OmniGen-v1", "commit": "0" * 40}))
    (work / ".incomplete" / "model.safetensors").write_bytes(b"old bytes")
    (work / "config.json").write_bytes(b"{}")
    out = dl.download("omnigen-v1", tmp_path, token=False, progress=False)
    assert json.loads((out / "config.json").read_text())["model_type"] == "phi3"
    with pytest.raises(dl.UserError, match="unknown model"):
        dl.download("omnigen-v2", tmp_path)
