"""Convolutional VAE encoder/decoder, sized from resolution and channels (DCGAN-style 4x4 bottleneck)."""

import torch
from torch import nn

from genlab.nets.dcgan import num_blocks


class Encoder(nn.Module):
    """image -> (mean, log-variance) of q(z|x), each (B, latent_dim)."""

    def __init__(self, channels: int = 3, resolution: int = 32, latent_dim: int = 64, width: int = 32):
        super().__init__()
        n = num_blocks(resolution)
        dims = [width * 2**i for i in range(n)]
        layers: list[nn.Module] = [nn.Conv2d(channels, dims[0], 3, 1, 1), nn.SiLU()]
        for d_in, d_out in zip([dims[0], *dims[:-1]], dims):
            layers += [nn.Conv2d(d_in, d_out, 4, 2, 1), nn.GroupNorm(min(8, d_out), d_out), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(dims[-1] * 16, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.head(self.net(x)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)


class Decoder(nn.Module):
    """z -> per-pixel distribution parameters, (B, channels, R, R) (logits or means)."""

    def __init__(self, channels: int = 3, resolution: int = 32, latent_dim: int = 64, width: int = 32):
        super().__init__()
        n = num_blocks(resolution)
        dims = [width * 2 ** (n - 1 - i) for i in range(n)]
        self.channels = channels
        self.fc = nn.Linear(latent_dim, dims[0] * 16)
        self.start = (dims[0], 4, 4)
        layers: list[nn.Module] = []
        for d_in, d_out in zip(dims, [*dims[1:], dims[-1]]):
            layers += [
                nn.ConvTranspose2d(d_in, d_out, 4, 2, 1),
                nn.GroupNorm(min(8, d_out), d_out),
                nn.SiLU(),
            ]
        layers.append(nn.Conv2d(dims[-1], channels, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, *self.start))
