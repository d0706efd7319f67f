"""VAE encoders/decoders: convolutional, sized from resolution and channels (DCGAN-style 4x4 bottleneck),
and the fully connected ones of Burda et al. 2016 (any resolution, e.g. 28 px MNIST).

With ``num_classes`` both take the class as a one-hot vector beside their input (CVAE, Sohn et al. 2015):
q(z|x, y) and p(x|z, y).
"""

import torch
import torch.nn.functional as F
from torch import nn

from genlab.nets.dcgan import num_blocks

MLP_HINT = (
    ", or take the fully connected networks that any resolution fits (experiment=vae_mnist_nll at 28 px)"
)


def with_class(h: torch.Tensor, labels: torch.Tensor | None, num_classes: int | None) -> torch.Tensor:
    """``h`` (B, D) with the one-hot ``labels`` appended for a conditional network."""
    if not num_classes:
        return h
    return torch.cat([h, F.one_hot(labels, num_classes).to(h.dtype)], dim=1)


def gaussian(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An encoder's output (B, 2 * latent_dim) as q(z|x)'s (mean, log-variance), the latter kept in range."""
    mean, logvar = h.chunk(2, dim=1)
    return mean, logvar.clamp(-30.0, 20.0)


class Encoder(nn.Module):
    """image[, labels] -> (mean, log-variance) of q(z|x[, y]), each (B, latent_dim)."""

    def __init__(
        self,
        channels: int = 3,
        resolution: int = 32,
        latent_dim: int = 64,
        width: int = 32,
        num_classes: int | None = None,
    ):
        super().__init__()
        self.num_classes = num_classes
        n = num_blocks(resolution, "vae", MLP_HINT)
        dims = [width * 2**i for i in range(n)]
        layers: list[nn.Module] = [nn.Conv2d(channels, dims[0], 3, 1, 1), nn.SiLU()]
        for d_in, d_out in zip([dims[0], *dims[:-1]], dims):
            layers += [nn.Conv2d(d_in, d_out, 4, 2, 1), nn.GroupNorm(min(8, d_out), d_out), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(dims[-1] * 16 + (num_classes or 0), 2 * latent_dim)

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return gaussian(self.head(with_class(self.net(x), labels, self.num_classes)))


class Decoder(nn.Module):
    """z[, labels] -> per-pixel distribution parameters, (B, channels, R, R) (logits or means)."""

    def __init__(
        self,
        channels: int = 3,
        resolution: int = 32,
        latent_dim: int = 64,
        width: int = 32,
        num_classes: int | None = None,
    ):
        super().__init__()
        self.num_classes = num_classes
        n = num_blocks(resolution, "vae", MLP_HINT)
        dims = [width * 2 ** (n - 1 - i) for i in range(n)]
        self.channels = channels
        self.fc = nn.Linear(latent_dim + (num_classes or 0), dims[0] * 16)
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

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self.fc(with_class(z, labels, self.num_classes)).view(-1, *self.start))


def mlp(dims: list[int]) -> nn.Sequential:
    """Linear layers ``dims[0] -> ... -> dims[-1]`` with tanh between them (Burda et al.'s networks)."""
    layers: list[nn.Module] = []
    for d_in, d_out in zip(dims, dims[1:]):
        layers += [nn.Linear(d_in, d_out), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


class MLPEncoder(nn.Module):
    """Flattened image[, labels] -> (mean, log-variance), ``depth`` hidden layers of ``width`` units
    (IWAE's one-stochastic-layer VAE: width 200, depth 2)."""

    def __init__(
        self,
        channels: int = 1,
        resolution: int = 28,
        latent_dim: int = 50,
        width: int = 200,
        depth: int = 2,
        num_classes: int | None = None,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.net = mlp([channels * resolution**2 + (num_classes or 0), *[width] * depth, 2 * latent_dim])

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        intensity = x.flatten(1).add(1).div(2)  # [-1, 1] -> [0, 1]: binarised pixels enter as 0/1, as in IWAE
        return gaussian(self.net(with_class(intensity, labels, self.num_classes)))


class MLPDecoder(nn.Module):
    """z[, labels] -> per-pixel parameters (B, channels, R, R), ``depth`` hidden layers of ``width`` units."""

    def __init__(
        self,
        channels: int = 1,
        resolution: int = 28,
        latent_dim: int = 50,
        width: int = 200,
        depth: int = 2,
        num_classes: int | None = None,
    ):
        super().__init__()
        self.num_classes, self.channels = num_classes, channels
        self.shape = (channels, resolution, resolution)
        self.net = mlp([latent_dim + (num_classes or 0), *[width] * depth, channels * resolution**2])

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(with_class(z, labels, self.num_classes)).view(-1, *self.shape)
