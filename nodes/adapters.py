"""ComfyUI-independent helpers of the node pack: model/LoRA discovery, example pairs, latent conversion and
image restoring (batch rules, conditioning and sampling live in ditfuse_core.pipeline). Imported by the nodes and by tests that run without ComfyUI.

Model folder layout (ComfyUI's `models/ditfuse`, plus any `ditfuse:` path of extra_model_paths.yaml):

    models/ditfuse/<name>/            a model: original OmniGen-v1 folder (config.json + model.safetensors
                                      [+ vae/]) or a diffusers folder (model_index.json, transformer/, vae/)
    models/ditfuse/<group>/<name>/    the same one level deeper (e.g. models/ditfuse/Shitao/OmniGen-v1)
    models/ditfuse/loras/<file>       a LoRA file (.safetensors; pickled .bin/.pt files are never loaded)
    models/ditfuse/loras/<folder>/    a LoRA folder (e.g. adapter_config.json + adapter_model.safetensors)

The lists also offer the models `ditfuse download` knows (OmniGen-v1, the DiTFuse LoRA) before they are there:
the Loader downloads them into the first root when its download_if_missing is on (`fetch_missing`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ditfuse_core import download, examples, prompts

FOLDER_KEY = "ditfuse"
LORA_SUBDIR = "loras"
NO_LORA = "none"
LORA_EXTS = (".safetensors", ".sft")
TASKS = prompts.FUSION_TASKS
ADJUSTMENTS = prompts.ADJUSTMENTS
DTYPES = ("auto", "fp32", "bf16", "fp16")

# Real weights, for the frontend's missing-model dialog (workflow properties.models) and the README.
REAL_WEIGHTS = [
    {"name": "OmniGen-v1/model.safetensors",
     "url": "https://huggingface.co/Shitao/OmniGen-v1/resolve/main/model.safetensors",
     "directory": FOLDER_KEY},
    {"name": "OmniGen-v1/vae/diffusion_pytorch_model.safetensors",
     "url": "https://huggingface.co/Shitao/OmniGen-v1/resolve/main/vae/diffusion_pytorch_model.safetensors",
     "directory": FOLDER_KEY},
]


def bundled_model_path() -> Path:
    from ditfuse_core.pipeline import BUNDLED_MODEL

    return Path(BUNDLED_MODEL)


def bundled_choice() -> str:
    return f"{bundled_model_path().name} (bundled)"


# ---- discovery -----------------------------------------------------------------------------------------
def is_model_folder(p: Path) -> bool:
    if not p.is_dir():
        return False
    if (p / "model_index.json").is_file():
        return True  # diffusers
    if (p / "config.json").is_file() and any(p.glob("*.safetensors")):
        return True  # original OmniGen-v1
    if (p / "transformer").is_dir() and (p / "vae").is_dir():
        return True
    return False


def _is_lora(p: Path) -> bool:
    if p.is_file():
        return p.suffix.lower() in LORA_EXTS
    return p.is_dir() and ((p / "adapter_config.json").is_file() or any(
        f.suffix.lower() in LORA_EXTS for f in p.iterdir() if f.is_file()))


def list_models(roots: list[str | os.PathLike]) -> list[str]:
    """Model names (relative paths with '/') in the given roots; the bundled model first."""
    found: list[str] = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir()):
            if child.name == LORA_SUBDIR or child.name.startswith("."):
                continue
            if inside(root, child.name) is None:  # a link out of the folder
                continue
            if is_model_folder(child):
                found.append(child.name)
            elif child.is_dir():
                found += [f"{child.name}/{g.name}" for g in sorted(child.iterdir())
                          if is_model_folder(g) and inside(root, f"{child.name}/{g.name}") is not None]
    out = [bundled_choice()]
    for name in [*found, *download.offered("model")]:
        if name not in out:
            out.append(name)
    return out


def list_loras(roots: list[str | os.PathLike]) -> list[str]:
    out = [NO_LORA]
    for root in roots:
        base = Path(root) / LORA_SUBDIR
        if not base.is_dir():
            continue
        for child in sorted(base.iterdir()):
            if (not child.name.startswith(".") and _is_lora(child) and child.name not in out
                    and inside(base, child.name) is not None):
                out.append(child.name)
    return out + [n for n in download.offered("lora") if n not in out]


def inside(root: str | os.PathLike, name: str) -> Path | None:
    """`root/name` when `name` is a listed-style relative name that stays inside `root` (symlinks resolved),
    else None: a node input never reaches a file outside the registered folders (absolute paths, `..`, links
    out). The CLI takes any path; it is the user's own shell."""
    parts = str(name).replace("\\", "/").split("/")
    if not name or Path(name).is_absolute() or any(p in ("", ".", "..") for p in parts) or ":" in parts[0]:
        return None
    base = Path(root).resolve()
    p = (base / Path(*parts)).resolve()
    return p if p.is_relative_to(base) else None


def resolve_model(name: str, roots) -> Path | None:
    """None → the bundled model; raises FileNotFoundError with a clear message if not found."""
    if name == bundled_choice():
        return None
    for root in roots:
        p = inside(root, name)
        if p is not None and is_model_folder(p):
            return p
    raise FileNotFoundError(model_missing_message(name, roots))


def resolve_lora(name: str, roots) -> Path | None:
    if not name or name == NO_LORA:
        return None
    for root in roots:
        p = inside(Path(root) / LORA_SUBDIR, name)
        if p is not None and p.exists() and _is_lora(p):
            return p
    raise FileNotFoundError(lora_missing_message(name, roots))


def _found(kind: str, name: str, roots) -> bool:
    try:
        (resolve_model if kind == "model" else resolve_lora)(name, roots)
    except FileNotFoundError:
        return False
    return True


def downloadable_missing(kind: str, name: str, roots) -> str | None:
    """The known model (`ditfuse_core.download.MODELS`) behind a listed `name` that is in no root yet, else None."""
    known = download.offered(kind).get(name)
    return known if known is not None and not _found(kind, name, roots) else None


def fetch_missing(kind: str, name: str, roots, allow: bool, callback=None) -> None:
    """The "download if missing" step before resolving: a listed downloadable `name` that is in no root is
    downloaded into the first root (allow), else a `DownloadError` naming `ditfuse download … --dir <root>`.
    Anything else is left to resolve_model / resolve_lora."""
    known = downloadable_missing(kind, name, roots)
    if known is None:
        return
    if not roots:
        raise FileNotFoundError((model_missing_message if kind == "model" else lora_missing_message)(name, roots))
    download.ensure(known, roots[0], allow, callback)


def check_choice(kind: str, name: str, roots, allow: bool) -> bool | str:
    """The Loader's submit check of model / lora: True, or the message (not found; or downloadable, missing and
    download_if_missing off: the `ditfuse download` command)."""
    known = download.offered(kind).get(name)
    if known is not None and roots and not _found(kind, name, roots):
        return True if allow else f"DiTFuse {kind} '{name}': {download.not_downloaded_message(known, roots[0])}"
    try:
        (resolve_model if kind == "model" else resolve_lora)(name, roots)
    except FileNotFoundError as e:
        return str(e)
    return True


def model_missing_message(name: str, roots) -> str:
    where = ", ".join(str(r) for r in roots) or "(no models/ditfuse folder registered)"
    return (f"DiTFuse model '{name}' was not found. Put the model folder (original OmniGen-v1 or diffusers "
            f"format) in one of: {where}; or choose '{bundled_choice()}'.")


def lora_missing_message(name: str, roots) -> str:
    where = ", ".join(str(Path(r) / LORA_SUBDIR) for r in roots) or "(no models/ditfuse folder registered)"
    return f"DiTFuse LoRA '{name}' was not found. Put the LoRA file or folder in one of: {where}; or choose 'none'."


# ---- low VRAM ---------------------------------------------------------------------------------------------
LOW_VRAM_STATES = ("LOW_VRAM", "NO_VRAM")  # comfy.model_management.VRAMState names (0.3.x … current)
LOW_VRAM_ENGINE = {"offload": "layers", "kv_cache": "cpu"}


def engine_for_vram_state(state_name: str | None) -> dict:
    """The engine options for ComfyUI's VRAM state (`comfy.model_management.vram_state.name`): --lowvram
    (LOW_VRAM) and --novram (NO_VRAM) keep the transformer blocks on the offload device, each moved to the GPU
    just in time, and the KV cache on the CPU; every other state ({}) loads the model whole."""
    return dict(LOW_VRAM_ENGINE) if state_name in LOW_VRAM_STATES else {}


# ---- images ---------------------------------------------------------------------------------------------
def example_manifest() -> dict:
    return examples.pairs()


def load_image_tensor(path: Path) -> torch.Tensor:
    """PNG → ComfyUI IMAGE [1,H,W,3] float32 in 0..1."""
    from PIL import Image

    arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.copy())[None]


def example_pair(task: str) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = examples.pair_paths(task)
    return load_image_tensor(a), load_image_tensor(b)


def pick(t: torch.Tensor, i: int) -> torch.Tensor:
    return t[i: i + 1] if t.shape[0] > 1 else t[0:1]


# ---- latents --------------------------------------------------------------------------------------------
def to_comfy_latent(pipe, scaled: torch.Tensor) -> torch.Tensor:
    """Our scaled latents → ComfyUI LATENT samples: raw (unscaled) VAE latents, like ComfyUI's VAE Encode."""
    from ditfuse_core import vae

    return vae.to_raw(pipe.vae, scaled).cpu()


def from_comfy_latent(pipe, raw: torch.Tensor) -> torch.Tensor:
    from ditfuse_core import vae

    return vae.from_raw(pipe.vae, raw)


def decode_raw(pipe, raw: torch.Tensor) -> torch.Tensor:
    """Raw VAE latents → pixels [B,3,H,W] in [-1,1], the core's own decode after its un-scaling, so the chain
    (sampler → LATENT → decode) gives bit-identical images to the one-node path."""
    from ditfuse_core import vae

    return vae.decode_raw(pipe.vae, raw)


def latent_dict(pipe, raw: torch.Tensor, sizes, made) -> dict:
    """A LATENT carrying what DiTFuse Decode needs downstream: image 1's original size per item, the latent size
    DiTFuse made (h, w) — a node that resizes the samples (core Upscale Latent copies the dict) leaves it behind,
    and Decode then decodes at the new size instead of undoing the change — and the VAE's factor (core latent
    nodes assume 8; ComfyUI up to 0.8 has no key for another, so it is ours)."""
    return {"samples": raw, "ditfuse_sizes": [list(s) for s in sizes],
            "ditfuse_latent_size": [int(made[0]), int(made[1])], "ditfuse_vae_factor": int(pipe.vae_factor)}


def restorable_sizes(latent: dict) -> list[tuple[int, int]] | None:
    """The original sizes to restore, or None when the latent no longer has the size DiTFuse made it at."""
    sizes, made = latent.get("ditfuse_sizes"), latent.get("ditfuse_latent_size")
    if not sizes or made is None or list(latent["samples"].shape[-2:]) != list(made):
        return None
    return [tuple(s) for s in sizes]


def restore_images(pixels: torch.Tensor, sizes: list[tuple[int, int]] | None) -> torch.Tensor:
    """[B,3,h,w] in [-1,1] → IMAGE [B,H,W,3]; resized to `sizes` (per item, all equal) if given."""
    from ditfuse_core import images as imgs

    if not sizes:
        return imgs.restore(pixels, (pixels.shape[-1], pixels.shape[-2]))
    outs = [imgs.restore(pixels[i: i + 1], sizes[min(i, len(sizes) - 1)]) for i in range(pixels.shape[0])]
    if len({tuple(o.shape) for o in outs}) != 1:
        raise ValueError("DiTFuse Decode: batch items have different original sizes; turn off restore_size")
    return torch.cat(outs)


def check_image(name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.shape[-1] not in (1, 3, 4):
        raise ValueError(f"DiTFuse: {name} must be an IMAGE tensor [B,H,W,C], got "
                         f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
