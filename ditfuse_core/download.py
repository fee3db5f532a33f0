"""`ditfuse download`: the real weights from the Hugging Face Hub, into a `models/ditfuse` folder.

    models/ditfuse/OmniGen-v1/      <- Shitao/OmniGen-v1 (config.json, model.safetensors, vae/, tokenizer files)
    models/ditfuse/loras/DiTFuse/   <- lijiayangCS/DiTFuse (adapter_config.json, adapter_model.safetensors)

Only the files the loaders read are fetched (never pickled .bin/.pt/.ckpt). How a download stays safe:

* It goes into a hidden sibling folder, `.OmniGen-v1.partial/`, which is renamed to `OmniGen-v1/` only when every
  file is there and verified; a crash, Ctrl-C or lost connection never leaves a folder that looks complete (the
  ComfyUI lists and the CLI skip hidden folders).
* Resume: bytes land in `.partial/.incomplete/<file>`; a dropped connection is resumed at once with an HTTP Range
  request (huggingface_hub's `http_get`), and a run that stopped (killed, offline) continues from the same byte
  on the next run. (huggingface_hub 2.4's own `snapshot_download` deletes its temporary file when a run fails, so
  a 15 GB file would start over; this module keeps it.)
* Verification: each file is hashed as written against what the Hub lists for the commit being downloaded: the
  sha256 of LFS files (the weights), the git blob sha1 of the small ones (JSON, tokenizer). A mismatch deletes
  the file and stops with an error. Files of another commit left in a `.partial` folder are discarded.
* Offline (`HF_HUB_OFFLINE=1`, no connection): a `DownloadError` (a `UserError`: the CLI prints one line, exit 2)
  naming the repository, the files and the folder to put them in by hand; nothing is created.

Library use (e.g. a "download if missing" option): `download("omnigen-v1", models_root)` returns the model
folder, at once and without the network when it is already complete. `ensure(name, root, allow)` is what the
ComfyUI Loader's `download_if_missing` calls: the folder when complete, else a download (allow) or a one-line
`DownloadError` naming the `ditfuse download` command and the folder (not allow); `callback(done, total)` gets
the bytes on disk as they are written (ComfyUI's progress bar; it may raise to stop: the bytes so far are kept
for the next run).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from .validation import UserError

DEFAULT_DIR = Path("models") / "ditfuse"
CHUNK = 8 << 20
PICKLE_EXTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


@dataclass(frozen=True)
class Known:
    repo: str
    folder: str  # under the models/ditfuse root
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()  # fetched when the repository has them

    @property
    def files(self) -> tuple[str, ...]:
        return self.required + self.optional


MODELS: dict[str, Known] = {
    # checkpoint.load_original: config.json + model.safetensors; vae.load_vae: vae/config.json + its safetensors;
    # tokenizer.find_tokenizer: tokenizer.json (else the bundled copy of the same Phi-3 tokenizer).
    "omnigen-v1": Known("Shitao/OmniGen-v1", "OmniGen-v1",
                        ("config.json", "model.safetensors", "vae/config.json",
                         "vae/diffusion_pytorch_model.safetensors"),
                        ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")),
    # lora._read: the folder's .safetensors + adapter_config.json.
    "ditfuse-lora": Known("lijiayangCS/DiTFuse", "loras/DiTFuse",
                          ("adapter_config.json", "adapter_model.safetensors")),
}


class DownloadError(UserError):
    """A download that cannot be done (offline, repository or file missing, bad bytes); says what to do."""


@dataclass(frozen=True)
class _Remote:
    path: str
    size: int
    sha256: str | None  # LFS files
    blob_id: str | None  # git blob sha1 (small files)


def spec(name: str) -> Known:
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name]


def destination(name: str, dir: str | os.PathLike | None = None) -> Path:
    """The folder `download(name, dir)` fills: <dir>/OmniGen-v1, <dir>/loras/DiTFuse (dir: ./models/ditfuse)."""
    return Path(DEFAULT_DIR if dir is None else dir).absolute() / spec(name).folder


def missing_files(name: str, dir: str | os.PathLike | None = None) -> list[str]:
    """Required files that are not (or are empty) in the destination folder."""
    dest = destination(name, dir)
    return [f for f in spec(name).required if not ((dest / f).is_file() and (dest / f).stat().st_size > 0)]


def is_complete(name: str, dir: str | os.PathLike | None = None) -> bool:
    return not missing_files(name, dir)


def manual_hint(name: str, dir: str | os.PathLike | None = None) -> str:
    k = spec(name)
    opt = f" (and, if present, {', '.join(k.optional)})" if k.optional else ""
    return (f"download {', '.join(k.required)}{opt} from https://huggingface.co/{k.repo} by hand and put them in "
            f"{destination(name, dir)}{os.sep} (ComfyUI: models/ditfuse/{k.folder}/)")


# ---- network ------------------------------------------------------------------------------------------------
def _env_offline() -> bool:
    return any(os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


_ONLINE_LOCK = threading.Lock()
_online_users, _saved_offline = 0, False


@contextlib.contextmanager
def _online():
    """huggingface_hub reads HF_HUB_OFFLINE once, at import (the CLI and the tests set it for model loading); a
    download follows the environment as it is now, so its own requests are let through while it runs."""
    global _online_users, _saved_offline
    from huggingface_hub import constants

    with _ONLINE_LOCK:
        if _online_users == 0:
            _saved_offline = constants.HF_HUB_OFFLINE
        _online_users += 1
        constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        with _ONLINE_LOCK:
            _online_users -= 1
            if _online_users == 0:
                constants.HF_HUB_OFFLINE = _saved_offline


_CONNECTION_ERRORS = {"ConnectError", "ConnectTimeout", "TimeoutException", "NetworkError", "ProxyError",
                      "OfflineModeIsEnabled", "ConnectionError", "ReadTimeout", "RemoteProtocolError"}


def _is_connection_error(e: BaseException | None) -> bool:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if any(c.__name__ in _CONNECTION_ERRORS for c in type(e).__mro__):
            return True
        e = e.__cause__ or e.__context__
    return False


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def _offline_error(name: str, dir, endpoint: str, reason: str) -> DownloadError:
    return DownloadError(f"cannot download {spec(name).repo} from {endpoint}: {reason}; {manual_hint(name, dir)}")


def _listing(name: str, dir, endpoint: str, revision: str, token) -> tuple[str, dict[str, _Remote]]:
    """(commit, {path: size and hashes}) of the files we want, from one `model_info(files_metadata=True)`."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from . import __version__

    k = spec(name)
    try:
        info = HfApi(endpoint=endpoint, token=token, library_name="ditfuse", library_version=__version__) \
            .model_info(k.repo, revision=revision, files_metadata=True)
    except Exception as e:
        if _is_connection_error(e):
            raise _offline_error(name, dir, endpoint, f"the Hub cannot be reached ({_first_line(e)})") from e
        if isinstance(e, HfHubHTTPError):
            raise DownloadError(f"cannot download {k.repo}: {_first_line(e)}; {manual_hint(name, dir)}") from e
        raise
    remote = {s.rfilename: _Remote(s.rfilename, s.lfs.size if s.lfs else (s.size or 0),
                                   s.lfs.sha256 if s.lfs else None, s.blob_id)
              for s in (info.siblings or []) if s.rfilename in k.files}
    lacking = [f for f in k.required if f not in remote]
    if lacking:
        raise DownloadError(f"{k.repo} (revision {revision}) has no {', '.join(lacking)}; this version of ditfuse "
                            f"expects the layout described in README \"The real weights\"")
    if not info.sha:
        raise DownloadError(f"{k.repo}: the Hub did not give a commit for revision {revision!r}")
    for r in remote.values():
        if r.path.lower().endswith(PICKLE_EXTS):  # never: the table lists safetensors only
            raise DownloadError(f"refusing to download pickled weights {r.path}")
        if r.sha256 is None and r.blob_id is None:
            raise DownloadError(f"{k.repo}: the Hub listed no hash for {r.path}, so it cannot be verified")
    return info.sha, remote


# ---- files --------------------------------------------------------------------------------------------------
def _hash_ok(path: Path, r: _Remote, progress: bool) -> bool:
    """sha256 for LFS files (the Hub's lfs.sha256), else the git blob sha1 ("blob <size>\\0" + bytes)."""
    from tqdm import tqdm

    size = path.stat().st_size
    if size != r.size:
        return False
    if r.sha256 is not None:
        h, want = hashlib.sha256(), r.sha256
    else:
        h, want = hashlib.sha1(f"blob {size}\0".encode()), r.blob_id
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc=f"verify {r.path}",
                                     file=sys.stderr, disable=not progress or size < (256 << 20)) as bar:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest().lower() == (want or "").lower()


class _CountingFile:
    """The file http_get writes to, reporting each write (callback(bytes written so far by this file))."""

    def __init__(self, f, on_write):
        self._f, self._on_write, self._n = f, on_write, 0

    def write(self, data):
        n = self._f.write(data)
        self._n += len(data)
        self._on_write(self._n)
        return n

    def __getattr__(self, name):
        return getattr(self._f, name)


def _fetch(name, dir, r: _Remote, work: Path, commit: str, endpoint: str, token, progress: bool,
           on_bytes=None) -> None:
    """One file into work/<path>, through work/.incomplete/<path> (kept between runs, resumed by Range)."""
    from functools import partial

    from urllib.parse import quote

    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers
    from tqdm import tqdm

    from . import __version__

    final, part = work / r.path, work / ".incomplete" / r.path
    if final.is_file() and final.stat().st_size == r.size:
        if on_bytes is not None:
            on_bytes(r.size)
        return  # moved there only after verification, for this commit (see _prepare_work)
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    if have > r.size:
        part.unlink()
        have = 0
    if have < r.size:
        headers = build_hf_headers(token=token, library_name="ditfuse", library_version=__version__)
        headers["Accept-Encoding"] = "identity"  # byte offsets of the file itself, for Range
        # hf_hub_url would build it from the endpoint huggingface_hub read at import, not from `endpoint`
        url = f"{endpoint}/{spec(name).repo}/resolve/{quote(commit, safe='')}/{quote(r.path)}"
        bar = None if progress else partial(tqdm, disable=True)
        if on_bytes is not None:
            on_bytes(have)
        try:
            with open(part, "ab") as f:
                out = f if on_bytes is None else _CountingFile(f, lambda n: on_bytes(have + n))
                http_get(url, out, resume_size=have, headers=headers, expected_size=r.size, displayed_filename=r.path,
                         tqdm_class=bar)
        except Exception as e:
            if _is_connection_error(e):
                raise _offline_error(name, dir, endpoint, f"the connection was lost while downloading {r.path} "
                                     f"({_first_line(e)}); run again to resume it") from e
            if isinstance(e, OSError):  # HTTP errors (HfHubHTTPError is one), short reads, a full disk
                raise DownloadError(f"cannot download {spec(name).repo}/{r.path}: {_first_line(e)}; run again to "
                                    f"resume, or {manual_hint(name, dir)}") from e
            raise
    if not _hash_ok(part, r, progress):
        part.unlink(missing_ok=True)
        what = f"sha256 {r.sha256}" if r.sha256 else f"git blob sha1 {r.blob_id}"
        raise DownloadError(f"{spec(name).repo}/{r.path}: the downloaded bytes do not match the Hub's {what} "
                            f"(size {r.size}); the file was deleted, run again to download it afresh")
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, final)


def _prepare_work(work: Path, repo: str, commit: str) -> None:
    """The hidden work folder, emptied when it holds another commit's (or an unknown) download."""
    stamp = work / ".download.json"
    if work.exists():
        try:
            ok = json.loads(stamp.read_text()) == {"repo": repo, "commit": commit}
        except (OSError, ValueError):
            ok = False
        if not ok:
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"repo": repo, "commit": commit}))


def download(name: str, dir: str | os.PathLike | None = None, *, force: bool = False, endpoint: str | None = None,
             revision: str = "main", token: str | bool | None = None, progress: bool = True,
             callback=None) -> Path:
    """Download a known model (`MODELS`: "omnigen-v1", "ditfuse-lora") into `destination(name, dir)` and return
    that folder. Already complete (its required files are there): returned at once, without the network, unless
    `force`. endpoint: the Hub (default: $HF_ENDPOINT, else huggingface.co). callback(done, total): bytes of
    all the files on disk so far, and their sum, as they are written. Raises `DownloadError`."""
    from filelock import FileLock
    from huggingface_hub import constants

    k = spec(name)
    dest = destination(name, dir)
    if not force and is_complete(name, dir):
        return dest
    if dest.exists() and not dest.is_dir():
        raise DownloadError(f"{dest} is a file; move it away to download {k.repo} there")
    if not force and dest.is_dir() and any(dest.iterdir()):
        raise DownloadError(f"{dest} exists but lacks {', '.join(missing_files(name, dir))}; move it away or "
                            f"download with --force (force=True) to replace it")
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    if _env_offline():
        raise _offline_error(name, dir, endpoint, "offline mode is on (HF_HUB_OFFLINE=1)")
    with _online():
        commit, remote = _listing(name, dir, endpoint, revision, token)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(dest.parent / f".{dest.name}.lock")):
            if not force and is_complete(name, dir):
                return dest  # another process finished it while we waited
            work = dest.parent / f".{dest.name}.partial"
            _prepare_work(work, k.repo, commit)
            total, before = sum(r.size for r in remote.values()), 0
            for r in sorted(remote.values(), key=lambda r: r.size):  # small files first: errors show early
                on_bytes = None if callback is None else (lambda n, b=before: callback(b + n, total))
                _fetch(name, dir, r, work, commit, endpoint, token, progress, on_bytes)
                before += r.size
            shutil.rmtree(work / ".incomplete", ignore_errors=True)
            (work / ".download.json").unlink()
            old = None
            if dest.exists():  # force, or an empty folder
                old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
                dest.rename(old)
            work.rename(dest)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    return dest


# ---- "download if missing" (the ComfyUI Loader) --------------------------------------------------------------
def offered(kind: str) -> dict[str, str]:
    """{name in a Loader list: known model} for kind "model" (a folder in the root: "OmniGen-v1") or "lora" (in
    its loras/ folder: "DiTFuse"): the names the ComfyUI lists offer before they are downloaded."""
    prefix = "loras/"
    return {k.folder[len(prefix):] if kind == "lora" else k.folder: n for n, k in MODELS.items()
            if k.folder.startswith(prefix) == (kind == "lora")}


def command(name: str, dir: str | os.PathLike | None = None) -> str:
    """The shell command that downloads `name` into `dir` (quoted when the path needs it)."""
    import shlex

    return f"ditfuse download {name} --dir {shlex.quote(str(Path(DEFAULT_DIR if dir is None else dir).absolute()))}"


def not_downloaded_message(name: str, dir: str | os.PathLike | None = None) -> str:
    return (f"{spec(name).repo} is not downloaded: run `{command(name, dir)}` (it goes to {destination(name, dir)}), "
            f"or turn on download_if_missing in DiTFuse Model Loader")


def ensure(name: str, dir: str | os.PathLike | None, allow: bool, callback=None, **kw) -> Path:
    """`destination(name, dir)` when complete; else `download` it (allow) or raise the one-line
    `not_downloaded_message` (not allow)."""
    if is_complete(name, dir):
        return destination(name, dir)
    if not allow:
        raise DownloadError(not_downloaded_message(name, dir))
    return download(name, dir, callback=callback, **kw)


# ---- CLI ----------------------------------------------------------------------------------------------------
def register(subparsers) -> argparse.ArgumentParser:
    """Add `ditfuse download` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "download", help="download OmniGen-v1 and/or the DiTFuse LoRA from the Hugging Face Hub",
        description="Download the real weights into DIR (default ./models/ditfuse; in ComfyUI pass its "
                    "models/ditfuse folder): omnigen-v1 -> DIR/OmniGen-v1, ditfuse-lora -> DIR/loras/DiTFuse. "
                    "Resumes an interrupted download; verifies every file against the Hub's sha256 / git hash; "
                    "the folder appears only when complete. HF_ENDPOINT selects a mirror, HF_TOKEN a token.")
    p.add_argument("model", choices=[*MODELS, "all"])
    p.add_argument("--dir", default=str(DEFAULT_DIR), help="the models/ditfuse folder (default: ./models/ditfuse)")
    p.add_argument("--force", action="store_true", help="download again and replace a folder that is there")
    p.add_argument("--revision", default="main", help="branch, tag or commit (default: main)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    names = list(MODELS) if args.model == "all" else [args.model]
    for n in names:
        try:
            was = not args.force and is_complete(n, args.dir)
            out = download(n, args.dir, force=args.force, revision=args.revision)
        except KeyboardInterrupt:
            print(f"ditfuse: interrupted; run the same command again to resume ({destination(n, args.dir)} is "
                  f"created only when complete)", file=sys.stderr)
            return 130
        if was:
            print(f"ditfuse: {spec(n).repo} is already in {out} (--force downloads it again)", file=sys.stderr)
        print(out)
    return 0
