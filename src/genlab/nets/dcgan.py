"""DCGAN generator and discriminator (Radford et al. 2016), sized from resolution and channels.

Both networks start/end at a 4x4 feature map and double/halve the spatial size per block, so any
power-of-two resolution >= 8 works (32 and 64 px are the usual choices).
"""

import math

import torch
from torch import nn

from genlab.errors import ConfigError


def num_blocks(resolution: int) -> int:
    """Number of 2x up/down-sampling blocks between 4x4 and ``resolution``."""
    if resolution < 8 or resolution & (resolution - 1):
        raise ConfigError(
            f"DCGAN needs a power-of-two resolution >= 8, got {resolution}; "
            "set data.resolution to 32 or 64 (the datamodules resize to it)."
        )
    return int(math.log2(resolution)) - 2


class Generator(nn.Module):
    """z (B, latent_dim) -> image (B, channels, resolution, resolution) in [-1, 1]."""

    def __init__(self, latent_dim: int = 100, channels: int = 3, resolution: int = 32, width: int = 64):
        super().__init__()
        self.latent_dim = latent_dim
        n = num_blocks(resolution)
        dims = [width * 2 ** (n - 1 - i) for i in range(n)]  # e.g. 256, 128, 64 for 32 px
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, dims[0], 4, 1, 0, bias=False),  # 1x1 -> 4x4
            nn.BatchNorm2d(dims[0]),
            nn.ReLU(inplace=True),
        ]
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers += [
                nn.ConvTranspose2d(d_in, d_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(d_out),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ConvTranspose2d(dims[-1], channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class Discriminator(nn.Module):
    """image -> one real/fake logit per image (no sigmoid: losses take logits).

    ``norm`` is ``batch`` (classic DCGAN), ``spectral`` (spectral normalisation) or ``none``
    (required for WGAN-GP, whose per-sample gradient penalty is invalid with batch statistics).
    """

    def __init__(self, channels: int = 3, resolution: int = 32, width: int = 64, norm: str = "batch"):
        super().__init__()
        if norm not in ("batch", "spectral", "none"):
            raise ConfigError(f"Discriminator norm must be 'batch', 'spectral' or 'none', got {norm!r}")
        self.norm = norm
        n = num_blocks(resolution)
        dims = [width * 2**i for i in range(n)]  # e.g. 64, 128, 256 for 32 px
        sn = nn.utils.parametrizations.spectral_norm if norm == "spectral" else (lambda m: m)
        layers: list[nn.Module] = [sn(nn.Conv2d(channels, dims[0], 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers.append(sn(nn.Conv2d(d_in, d_out, 4, 2, 1, bias=norm != "batch")))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(d_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        layers.append(sn(nn.Conv2d(dims[-1], 1, 4, 1, 0)))  # 4x4 -> 1x1
        self.net = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: N(0, 0.02) convolutions, N(1, 0.02) BatchNorm scales."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        parametrized = nn.utils.parametrize.is_parametrized(module, "weight")
        nn.init.normal_(module.parametrizations.weight.original if parametrized else module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
