"""Denoising diffusion (DDPM, Ho et al. 2020) with ancestral DDPM and deterministic DDIM sampling.

The network predicts the noise (``prediction=eps``) or the velocity ``v = sqrt(ab) eps -
sqrt(1 - ab) x0`` (``prediction=v``, Salimans & Ho 2022). Sampling and validation use the EMA
network when ``ema_decay`` is set.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import ConfigError
from genlab.models import GenerativeModel, eval_prefix
from genlab.models.schedules import make_schedule
from genlab.utils.ema import EMA

SCHEDULES = ("linear", "cosine")
SAMPLERS = ("ddpm", "ddim")


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


class Diffusion(GenerativeModel):
    fallback_metric = "val/loss"

    def __init__(
        self,
        net: nn.Module,
        timesteps: int = 1000,
        schedule: str = "linear",
        prediction: str = "eps",
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        lr_schedule: str = "constant",
        warmup_steps: int = 500,
        ema_decay: float | None = 0.9999,
        sampler: str = "ddim",
        sample_steps: int = 50,
    ):
        super().__init__()
        if prediction not in ("eps", "v"):
            raise ConfigError(f"model.prediction must be 'eps' or 'v', got {prediction!r}")
        if sampler not in SAMPLERS:
            raise ConfigError(f"model.sampler must be one of {SAMPLERS}, got {sampler!r}")
        if lr <= 0:
            raise ConfigError(f"model.lr must be positive, got {lr}")
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.ema = EMA(net, ema_decay) if ema_decay else None
        betas = beta_schedule(schedule, timesteps)
        alpha_bar = torch.cumprod(1 - betas, 0)
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        for name, value in {
            "betas": betas,
            "alpha_bar": alpha_bar,
            "alpha_bar_prev": alpha_bar_prev,
            "posterior_var": betas * (1 - alpha_bar_prev) / (1 - alpha_bar),
        }.items():
            self.register_buffer(name, value.float(), persistent=False)

    # ---- the forward process and the network's parametrisation ----
    def _at(self, values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return values[t].view(-1, 1, 1, 1)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        ab = self._at(self.alpha_bar, t)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if self.hparams.prediction == "eps":
            return noise
        ab = self._at(self.alpha_bar, t)
        return ab.sqrt() * noise - (1 - ab).sqrt() * x0

    def predict_x0_eps(
        self, net: nn.Module, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's estimate of (x0, eps) at x_t, with x0 clipped to [-1, 1]."""
        out = net(x_t, t).float()
        ab = self._at(self.alpha_bar, t)
        if self.hparams.prediction == "eps":
            x0 = (x_t - (1 - ab).sqrt() * out) / ab.sqrt()
        else:
            x0 = ab.sqrt() * x_t - (1 - ab).sqrt() * out
        x0 = x0.clamp(-1, 1)
        eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        return x0, eps

    def loss(
        self, net: nn.Module, x0: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        b = x0.shape[0]
        t = torch.randint(0, self.hparams.timesteps, (b,), generator=generator).to(self.device)
        noise = torch.randn(x0.shape, generator=generator).to(self.device, x0.dtype)
        prediction = net(self.q_sample(x0, t, noise), t)
        return F.mse_loss(prediction.float(), self.target(x0, t, noise).float())

    # ---- sampling ----
    @property
    def sampling_net(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.net

    @torch.no_grad()
    def sample(
        self,
        num: int,
        generator: torch.Generator | None = None,
        sampler: str | None = None,
        steps: int | None = None,
    ) -> torch.Tensor:
        """``num`` images in [-1, 1]: ancestral DDPM over all T steps, or DDIM (eta = 0) over ``steps``."""
        sampler = sampler or self.hparams.sampler
        net = self.sampling_net
        c, r = net.channels, net.resolution
        x = torch.randn(num, c, r, r, generator=generator).to(self.device)
        if sampler == "ddpm":
            for i in reversed(range(self.hparams.timesteps)):
                t = torch.full((num,), i, device=self.device, dtype=torch.long)
                x0, _ = self.predict_x0_eps(net, x, t)
                ab, ab_prev, beta = self.alpha_bar[i], self.alpha_bar_prev[i], self.betas[i]
                mean = (ab_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - ab_prev) * x) / (1 - ab)
                noise = torch.randn(x.shape, generator=generator).to(self.device) if i > 0 else 0.0
                x = mean + self.posterior_var[i].sqrt() * noise
            return x.clamp(-1, 1)
        if sampler != "ddim":
            raise ConfigError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        steps = steps or self.hparams.sample_steps
        if not 1 <= steps <= self.hparams.timesteps:
            raise ConfigError(f"DDIM steps must be in [1, {self.hparams.timesteps}], got {steps}")
        times = torch.linspace(self.hparams.timesteps - 1, 0, steps).round().long().tolist()
        for i, t_now in enumerate(times):
            t = torch.full((num,), t_now, device=self.device, dtype=torch.long)
            x0, eps = self.predict_x0_eps(net, x, t)
            ab_prev = (
                self.alpha_bar[times[i + 1]] if i + 1 < len(times) else torch.ones((), device=self.device)
            )
            x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
        return x.clamp(-1, 1)

    # ---- training ----
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x0 = batch[0] if isinstance(batch, (list, tuple)) else batch
        loss = self.loss(self.net, x0)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.net)

    def validation_step(self, batch, batch_idx: int) -> None:
        x0 = batch[0] if isinstance(batch, (list, tuple)) else batch
        # Fixed timesteps and noise per batch: validation losses are comparable across epochs.
        generator = torch.Generator().manual_seed(10_000 + batch_idx)
        loss = self.loss(self.sampling_net, x0, generator)
        self.log(f"{eval_prefix(self)}/loss", loss, prog_bar=True, sync_dist=True)

    test_step = validation_step

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = make_schedule(opt, hp.lr_schedule, total, hp.warmup_steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"}}
