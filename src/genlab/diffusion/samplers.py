"""Reverse-process samplers behind one interface, in the spirit of diffusers' schedulers.

A sampler lists the timesteps the network is evaluated at (noisiest first) and maps one network
output to the next, less noisy x; :func:`sample_loop` runs any of them from x_T ~ N(0, I), drawn first
from ``generator`` so that every sampler starts from the same noise for a seed.

- ``ddpm``: ancestral sampling over all T steps (Ho et al. 2020); ``steps`` is ignored.
- ``ddim``: deterministic DDIM (eta = 0, Song et al. 2021) over ``steps`` evenly spaced timesteps.
- ``dpmpp_2m``: DPM-Solver++(2M) (Lu et al. 2022), the multistep second-order solver of the
  probability-flow ODE in data-prediction (x0) form and log-SNR time; same timesteps as DDIM.
"""

import math
from typing import ClassVar

import torch
from torch import nn

from genlab.diffusion.schedule import NoiseSchedule
from genlab.errors import ConfigError

CLEAN = -1  # the "timestep" after t = 0: alpha_bar = 1, x = x0


class Sampler:
    """``for t in timesteps(steps): x = step(net(x, t), t, x)``; ``timesteps`` also resets the state."""

    label: ClassVar[str]  # the name in messages

    def __init__(self, schedule: NoiseSchedule, prediction: str):
        self.schedule, self.prediction = schedule, prediction
        self.next_t: dict[int, int] = {}

    def _times(self, steps: int | None) -> list[int]:
        return torch.linspace(self.schedule.timesteps - 1, 0, self._checked(steps)).round().long().tolist()

    def _checked(self, steps: int | None) -> int:
        T = self.schedule.timesteps
        if steps is None or not 1 <= steps <= T:
            raise ConfigError(f"{self.label} steps must be in [1, {T}], got {steps}")
        return steps

    def timesteps(self, steps: int | None = None) -> list[int]:
        """The timesteps to evaluate the network at, T-1 first and 0 last."""
        times = self._times(steps)
        self.next_t = dict(zip(times, [*times[1:], CLEAN]))
        return times

    def x0_eps(
        self, model_output: torch.Tensor, t: int, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.schedule.predict_x0_eps(model_output, x, t, self.prediction)

    def step(
        self, model_output: torch.Tensor, t: int, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """x at the timestep after ``t`` (x0 after t = 0) from the network's output at (x, t)."""
        raise NotImplementedError


class DDPM(Sampler):
    """Ancestral sampling from the posterior q(x_{t-1} | x_t, x0) with x0 predicted; all T steps."""

    label = "DDPM"

    def _times(self, steps: int | None) -> list[int]:
        return list(reversed(range(self.schedule.timesteps)))  # steps ignored

    def step(self, model_output, t, x, generator=None):
        s = self.schedule
        x0, _ = self.x0_eps(model_output, t, x)
        ab, ab_prev, beta = s.alpha_bar[t], s.alpha_bar_prev[t], s.betas[t]
        mean = (ab_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - ab_prev) * x) / (1 - ab)
        noise = torch.randn(x.shape, generator=generator).to(x.device) if t > 0 else 0.0
        return mean + s.posterior_var[t].sqrt() * noise


class DDIM(Sampler):
    """Deterministic DDIM (eta = 0): x_s = sqrt(ab_s) x0 + sqrt(1 - ab_s) eps, with ab = 1 after t = 0."""

    label = "DDIM"

    def step(self, model_output, t, x, generator=None):
        x0, eps = self.x0_eps(model_output, t, x)
        s = self.next_t[t]
        ab_prev = self.schedule.alpha_bar[s] if s != CLEAN else torch.ones((), device=x.device)
        return ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps


class DPMSolverPP2M(Sampler):
    """DPM-Solver++(2M): multistep second order in the data (x0) prediction and log-SNR lambda.

    With alpha = sqrt(ab), sigma = sqrt(1 - ab), lambda = log(alpha / sigma) and h = lambda_s - lambda_t
    from t to the next timestep s, ``x_s = sigma_s / sigma_t x - alpha_s (e^-h - 1) D``, where
    D = x0_t for a first-order (DDIM) step and ``D = x0_t + (x0_t - x0_prev) / (2 r)``,
    r = (lambda_t - lambda_prev) / h, for a second-order one. First order: the first step (no history)
    and, as diffusers' ``lower_order_final``, the last ones: lambda is steep near t = 0 (4.6 at t = 0,
    1.7 at t = 52 for the linear T = 1000 schedule), so the step onto t = 0 would extrapolate x0 far
    past the two points it has (measured: less accurate than DDIM); from t = 0 the step to sigma = 0
    is x = x0.
    """

    label = "DPM-Solver++(2M)"

    def timesteps(self, steps: int | None = None) -> list[int]:
        ab = self.schedule.alpha_bar.detach().double().cpu()
        self.alpha, self.sigma = ab.sqrt().tolist(), (1 - ab).sqrt().tolist()
        self.lam = (0.5 * (ab.log() - (1 - ab).log())).tolist()
        self.prev: tuple[torch.Tensor, float] | None = None  # (x0, lambda) of the previous step
        return super().timesteps(steps)

    def step(self, model_output, t, x, generator=None):
        x0, _ = self.x0_eps(model_output, t, x)
        s = self.next_t[t]
        if s == CLEAN:
            return x0
        h = self.lam[s] - self.lam[t]
        d = x0
        if self.prev is not None and self.next_t[s] != CLEAN:
            x0_prev, lam_prev = self.prev
            r = (self.lam[t] - lam_prev) / h
            d = x0 + (x0 - x0_prev) / (2 * r)
        self.prev = (x0, self.lam[t])
        return (self.sigma[s] / self.sigma[t]) * x - (self.alpha[s] * math.expm1(-h)) * d


SAMPLERS: dict[str, type[Sampler]] = {"ddpm": DDPM, "ddim": DDIM, "dpmpp_2m": DPMSolverPP2M}


def make_sampler(name: str, schedule: NoiseSchedule, prediction: str) -> Sampler:
    if name not in SAMPLERS:
        raise ConfigError(f"Unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    return SAMPLERS[name](schedule, prediction)


@torch.no_grad()
def sample_loop(
    net: nn.Module,
    sampler: Sampler,
    shape: tuple[int, ...],
    steps: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Samples in [-1, 1] of ``shape``: x_T is the first draw from ``generator`` (on CPU), for every sampler."""
    x = torch.randn(shape, generator=generator).to(device)
    for t in sampler.timesteps(steps):
        t_batch = torch.full((shape[0],), t, device=x.device, dtype=torch.long)
        x = sampler.step(net(x, t_batch).float(), t, x, generator)
    return x.clamp(-1, 1)
