"""diffusers' OmniGenPipeline over our weights: the reference the engine is tested and benchmarked against."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch


def processor_module():
    """diffusers' OmniGen processor module, usable without torchvision: PyPI torchvision does not load beside
    the CPU torch wheel, and the processor needs only four of its transforms, given here as equivalents."""
    import diffusers.pipelines.omnigen.pipeline_omnigen as pipe_mod
    import diffusers.pipelines.omnigen.processor_omnigen as proc

    if not hasattr(proc, "transforms"):
        proc.transforms = _transforms()
    if not hasattr(pipe_mod, "OmniGenMultiModalProcessor"):  # imported there only with torchvision
        pipe_mod.OmniGenMultiModalProcessor = proc.OmniGenMultiModalProcessor
    return proc


def diffusers_pipeline(transformer, vae):
    """OmniGenPipeline sharing `transformer` and `vae`, on the authors' schedule (t = 0, 1/N, …, 1 fed unscaled:
    FlowMatchEulerDiscreteScheduler(1, invert_sigmas)) with the bundled Phi-3 tokenizer."""
    from diffusers import FlowMatchEulerDiscreteScheduler, OmniGenPipeline
    from transformers import PreTrainedTokenizerFast

    from .tokenizer import BUNDLED

    processor_module()
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(BUNDLED), bos_token="<s>", eos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>", unk_token="<unk>")
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, invert_sigmas=True)
    return OmniGenPipeline(transformer=transformer, vae=vae, tokenizer=tokenizer, scheduler=sched)


def _transforms():
    class Compose:
        def __init__(self, fns):
            self.fns = fns

        def __call__(self, x):
            for f in self.fns:
                x = f(x)
            return x

    def to_tensor():
        return lambda im: torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()

    def normalize(mean, std, inplace=False):
        m = torch.tensor(mean)[:, None, None]
        s = torch.tensor(std)[:, None, None]
        return lambda t: (t - m) / s

    return SimpleNamespace(Compose=Compose, Lambda=lambda f: f, ToTensor=to_tensor, Normalize=normalize)
