"""The forward (noising) process of DDPM and the network's eps / v parametrisation.

``x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps`` with ``ab_t`` the cumulative product of ``1 - beta``. The
network predicts ``eps`` or the velocity ``v = sqrt(ab) eps - sqrt(1 - ab) x0`` (Salimans & Ho 2022).
"""

import math

import torch
from torch import nn

from genlab.errors import ConfigError

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "v")


def beta_schedule(kind: str, timesteps: int) -> torch.Tensor:
    """Linear (Ho et al., rescaled to ``timesteps``) or cosine (Nichol & Dhariwal 2021) betas, float64."""
    if kind == "linear":
        scale = 1000 / timesteps
        return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)
    if kind == "cosine":
        s = 0.008
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        alpha_bar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    raise ConfigError(f"Unknown beta schedule {kind!r}; choose one of {SCHEDULES}")


def at(values: torch.Tensor, t: torch.Tensor | int, x: torch.Tensor) -> torch.Tensor:
    """``values[t]`` shaped to broadcast against ``x``: t of shape (B,) -> (B, 1, ..., 1); an int -> a scalar."""
    v = values[t]
    return v.view(-1, *([1] * (x.ndim - 1))) if v.ndim else v


class NoiseSchedule(nn.Module):
    """The betas and their cumulative products (float64 math, float32 non-persistent buffers)."""

    betas: torch.Tensor
    alpha_bar: torch.Tensor
    alpha_bar_prev: torch.Tensor
    posterior_var: torch.Tensor

    def __init__(self, kind: str = "linear", timesteps: int = 1000):
        super().__init__()
        self.kind, self.timesteps = kind, timesteps
        betas = beta_schedule(kind, timesteps)
        alpha_bar = torch.cumprod(1 - betas, 0)
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        for name, value in {
            "betas": betas,
            "alpha_bar": alpha_bar,
            "alpha_bar_prev": alpha_bar_prev,
            "posterior_var": betas * (1 - alpha_bar_prev) / (1 - alpha_bar),
        }.items():
            self.register_buffer(name, value.float(), persistent=False)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """q(x_t | x0) sampled with ``noise``."""
        ab = at(self.alpha_bar, t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, prediction: str) -> torch.Tensor:
        """What the network regresses: ``noise`` (eps) or the velocity (v)."""
        if prediction == "eps":
            return noise
        ab = at(self.alpha_bar, t, x0)
        return ab.sqrt() * noise - (1 - ab).sqrt() * x0

    def predict_x0_eps(
        self,
        model_output: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor | int,
        prediction: str,
        clip: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's estimate of (x0, eps) at x_t; x0 clipped to [-1, 1] and eps made consistent with it."""
        ab = at(self.alpha_bar, t, x_t)
        if prediction == "eps":
            x0 = (x_t - (1 - ab).sqrt() * model_output) / ab.sqrt()
        else:
            x0 = ab.sqrt() * x_t - (1 - ab).sqrt() * model_output
        if clip:
            x0 = x0.clamp(-1, 1)
        eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        return x0, eps
