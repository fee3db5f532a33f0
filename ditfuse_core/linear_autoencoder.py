"""A linear autoencoder with the interface of diffusers' AutoencoderKL, for the bundled CPU model.

Why: fusion is judged against its sources, and a small convolutional VAE loses more detail in its round trip
than a fusion rule gains (docs/notes/findings.md). Each f×f×3 pixel block is projected on the leading
`latent_channels` principal components of such blocks in training images enlarged as the pipeline enlarges its
inputs (`tools/bundled/autoencoder_fit.py`); decoding is the transpose. At the bundled model's working size
(inputs enlarged ≥ 2×, so a block holds at most (f/2)²·3 = 12 independent values for 16 latent channels) the
round trip is nearly exact, and because encoder and decoder are linear a latent average decodes to the pixel
average. The posterior is a point (deterministic), so `encode(..., sample=True)` gives the same latent.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKLOutput
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_utils import ModelMixin


class LinearAutoencoder(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, factor: int = 4, latent_channels: int = 16, in_channels: int = 3,
                 scaling_factor: float = 1.0, shift_factor: float = 0.0, force_upcast: bool = False):
        super().__init__()
        n = in_channels * factor * factor
        # rows: the principal directions of a block flattened as (channel, row, col); mean: the mean block
        self.basis = torch.nn.Parameter(torch.zeros(latent_channels, n), requires_grad=False)
        self.mean = torch.nn.Parameter(torch.zeros(n), requires_grad=False)

    @property
    def downsample_factor(self) -> int:
        return self.config.factor

    def _kernel(self) -> torch.Tensor:
        c, f = self.config.in_channels, self.config.factor
        return self.basis.reshape(-1, c, f, f)

    def _mean_image(self, h: int, w: int) -> torch.Tensor:
        c, f = self.config.in_channels, self.config.factor
        return self.mean.reshape(1, c, f, f).repeat(1, 1, h, w)

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        f = self.config.factor
        if x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f"image size {tuple(x.shape[-2:])} must be a multiple of {f}")
        h, w = x.shape[-2] // f, x.shape[-1] // f
        z = F.conv2d(x - self._mean_image(h, w).to(x.dtype), self._kernel().to(x.dtype), stride=f)
        dist = DiagonalGaussianDistribution(torch.cat([z, torch.zeros_like(z)], 1), deterministic=True)
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: torch.Tensor, return_dict: bool = True):
        x = F.conv_transpose2d(z, self._kernel().to(z.dtype), stride=self.config.factor)
        x = x + self._mean_image(*z.shape[-2:]).to(x.dtype)
        return DecoderOutput(sample=x) if return_dict else (x,)
