"""A small RealNVP-style normalizing flow (Dinh et al. 2017) on flattened images.

Affine coupling layers alternate which half of the pixels (even / odd positions) is transformed,
conditioned on the other half through an MLP. Invertible with a cheap log-determinant.
"""

import torch
from torch import nn


class AffineCoupling(nn.Module):
    """y_b = x_b * exp(s(x_a)) + t(x_a) on the positions ``b`` where ``mask`` is 0; ``x_a`` passes through."""

    def __init__(self, dim: int, hidden: int, parity: int):
        super().__init__()
        self.register_buffer("mask", (torch.arange(dim) % 2 == parity).float(), persistent=False)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.scale, self.shift = nn.Linear(hidden, dim), nn.Linear(hidden, dim)
        for layer in (self.scale, self.shift):  # start as the identity map
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(x * self.mask)
        keep = 1 - self.mask
        return torch.tanh(self.scale(h)) * keep, self.shift(h) * keep

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_s, t = self._params(x)
        return x * log_s.exp() + t, log_s.sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        log_s, t = self._params(y)  # the masked half is unchanged, so the same parameters
        return (y - t) * (-log_s).exp()


class CouplingFlow(nn.Module):
    """images (B, C, R, R) <-> latents (B, C*R*R) with standard normal prior; ``forward`` also gives log|det J|."""

    def __init__(self, channels: int = 1, resolution: int = 32, hidden: int = 512, num_layers: int = 6):
        super().__init__()
        self.channels, self.resolution = channels, resolution
        self.dim = channels * resolution * resolution
        self.layers = nn.ModuleList(AffineCoupling(self.dim, hidden, i % 2) for i in range(num_layers))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, log_det = x.flatten(1), x.new_zeros(x.shape[0])
        for layer in self.layers:
            z, ld = layer(z)
            log_det = log_det + ld
        return z, log_det

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z.view(-1, self.channels, self.resolution, self.resolution)
