"""GAN objectives on discriminator logits: non-saturating (BCE), hinge and WGAN(-GP)."""

from collections.abc import Callable

import torch
import torch.nn.functional as F

from genlab.errors import ConfigError

LOSSES = ("non_saturating", "hinge", "wgan_gp")


def d_loss(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    if kind == "non_saturating":
        return F.binary_cross_entropy_with_logits(
            real_logits, torch.ones_like(real_logits)
        ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    if kind == "wgan_gp":
        return fake_logits.mean() - real_logits.mean()
    raise ConfigError(f"Unknown GAN loss {kind!r}; choose one of {LOSSES}")


def g_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    if kind == "non_saturating":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    if kind in ("hinge", "wgan_gp"):
        return -fake_logits.mean()
    raise ConfigError(f"Unknown GAN loss {kind!r}; choose one of {LOSSES}")


def gradient_penalty(
    discriminator: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor
) -> torch.Tensor:
    """WGAN-GP penalty (Gulrajani et al. 2017): E[(||grad D(x_hat)||_2 - 1)^2] on interpolates."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
