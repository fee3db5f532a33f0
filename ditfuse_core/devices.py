"""Device and dtype choice, explicit: nothing here picks `cuda` behind the caller's back."""
from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A torch.device; 'auto' means the best available accelerator, else the CPU."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for but CUDA is not available; use --device cpu")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """'auto': bf16 on GPUs that support it, fp16 on other accelerators, fp32 on the CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.float32
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto, fp32, bf16 or fp16") from None


def resolve_model_dtype(dtype: str | torch.dtype | None, device: torch.device,
                        precision: dict | None = None) -> torch.dtype:
    """`resolve_dtype` for one model: 'auto' takes the dtype its ditfuse.json asks for ("precision": {"dtype":
    "fp32"}) where it names one. The bundled model does: it is tiny, and constructed from exact cancellations
    that bf16 weights blur (up to 4 of 255 levels on an H200)."""
    if (dtype is None or dtype == "auto") and precision and precision.get("dtype"):
        return resolve_dtype(precision["dtype"], device)
    return resolve_dtype(dtype, device)


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: oneDNN runs bf16 convolutions natively (else it emulates them, slower than fp32)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_vae_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """As resolve_dtype, except that 'auto' on a CPU with native bf16 gives bf16: the VAE is most of a CPU
    fusion's time, and bf16 changes a KL VAE's reconstructions by far less than their own error (the bundled
    linear autoencoder ignores it and runs in fp32). The transformer stays fp32 on the CPU: the bundled one is
    constructed from exact cancellations."""
    if (dtype is None or dtype == "auto") and device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return resolve_dtype(dtype, device)
