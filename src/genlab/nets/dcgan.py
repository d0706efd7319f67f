"""DCGAN generator and discriminator (Radford et al. 2016), sized from resolution and channels.

Both networks start/end at a 4x4 feature map and double/halve the spatial size per block, so any
power-of-two resolution >= 8 works (32 and 64 px are the usual choices). With ``num_classes`` they are
class-conditional as in SNGAN / ProjGAN (Miyato & Koyama 2018): conditional BatchNorm in the generator, a
projection discriminator.
"""

import math

import torch
from torch import nn

from genlab.errors import ConfigError


def num_blocks(resolution: int, family: str = "gan", hint: str = "") -> int:
    """Number of 2x up/down-sampling blocks between 4x4 and ``resolution``."""
    if resolution < 8 or resolution & (resolution - 1):
        raise ConfigError(
            f"model={family}'s convolutional networks need a power-of-two data.resolution >= 8, got "
            f"{resolution}; set data.resolution=32 or 64 (the datamodules resize to it){hint}."
        )
    return int(math.log2(resolution)) - 2


class Generator(nn.Module):
    """z (B, latent_dim)[, labels (B,)] -> image (B, channels, resolution, resolution) in [-1, 1].

    With ``num_classes`` every BatchNorm is a :class:`ConditionalBatchNorm2d` (per-class scale and shift).
    """

    def __init__(
        self,
        latent_dim: int = 100,
        channels: int = 3,
        resolution: int = 32,
        width: int = 64,
        num_classes: int | None = None,
    ):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes

        def batch_norm(features: int) -> nn.Module:
            return ConditionalBatchNorm2d(features, num_classes) if num_classes else nn.BatchNorm2d(features)

        n = num_blocks(resolution)
        dims = [width * 2 ** (n - 1 - i) for i in range(n)]  # e.g. 256, 128, 64 for 32 px
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, dims[0], 4, 1, 0, bias=False),  # 1x1 -> 4x4
            batch_norm(dims[0]),
            nn.ReLU(inplace=True),
        ]
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers += [
                nn.ConvTranspose2d(d_in, d_out, 4, 2, 1, bias=False),
                batch_norm(d_out),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ConvTranspose2d(dims[-1], channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes is None:
            return self.net(z[:, :, None, None])
        x = z[:, :, None, None]
        for layer in self.net:
            x = layer(x, labels) if isinstance(layer, ConditionalBatchNorm2d) else layer(x)
        return x


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose scale and shift are learned per class (de Vries et al. 2017), as in SNGAN's generator."""

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(num_features, affine=False)
        self.scale = nn.Embedding(num_classes, num_features)
        self.shift = nn.Embedding(num_classes, num_features)
        nn.init.normal_(self.scale.weight, 1.0, 0.02)  # DCGAN's BatchNorm initialisation, per class
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale(labels)[:, :, None, None], self.shift(labels)[:, :, None, None]
        return self.norm(x) * scale + shift


class Discriminator(nn.Module):
    """image[, labels] -> one real/fake logit per image (no sigmoid: losses take logits).

    ``norm`` is ``batch`` (classic DCGAN), ``spectral`` (spectral normalisation) or ``none``
    (required for WGAN-GP, whose per-sample gradient penalty is invalid with batch statistics).
    With ``num_classes`` it is a projection discriminator: the logit plus the inner product of a class
    embedding with the sum-pooled features of the last block (Miyato & Koyama 2018).
    """

    def __init__(
        self,
        channels: int = 3,
        resolution: int = 32,
        width: int = 64,
        norm: str = "batch",
        num_classes: int | None = None,
    ):
        super().__init__()
        if norm not in ("batch", "spectral", "none"):
            raise ConfigError(f"Discriminator norm must be 'batch', 'spectral' or 'none', got {norm!r}")
        self.norm, self.num_classes = norm, num_classes
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
        self.embed = None
        if num_classes:
            self.embed = nn.Embedding(num_classes, dims[-1])
            nn.init.xavier_uniform_(self.embed.weight)
            self.embed = sn(self.embed)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is None:
            return self.net(x).flatten()
        *body, head = self.net
        for layer in body:
            x = layer(x)
        return head(x).flatten() + (self.embed(labels) * x.sum((2, 3))).sum(1)


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: N(0, 0.02) convolutions, N(1, 0.02) BatchNorm scales."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        parametrized = nn.utils.parametrize.is_parametrized(module, "weight")
        nn.init.normal_(module.parametrizations.weight.original if parametrized else module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
