"""Denoising diffusion (DDPM, Ho et al. 2020) sampled with ancestral DDPM, DDIM or DPM-Solver++(2M).

The noise process and the eps / v parametrisation live in :mod:`genlab.diffusion.schedule`, the
samplers in :mod:`genlab.diffusion.samplers`. Sampling and validation use the EMA network when
``ema_decay`` is set.
"""

import torch
import torch.nn.functional as F
from torch import nn

from genlab.diffusion import PREDICTIONS, SAMPLERS, NoiseSchedule, make_sampler, sample_loop
from genlab.errors import ConfigError
from genlab.interfaces import reject_conditions
from genlab.models import GenerativeModel, eval_prefix
from genlab.models.schedules import make_schedule
from genlab.utils.ema import EMA


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
        if prediction not in PREDICTIONS:
            raise ConfigError(f"model.prediction must be 'eps' or 'v', got {prediction!r}")
        if sampler not in SAMPLERS:
            raise ConfigError(f"model.sampler must be one of {tuple(SAMPLERS)}, got {sampler!r}")
        if lr <= 0:
            raise ConfigError(f"model.lr must be positive, got {lr}")
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.ema = EMA(net, ema_decay) if ema_decay else None
        self.schedule = NoiseSchedule(schedule, timesteps)

    # ---- the forward process (genlab.diffusion.schedule) ----
    @property
    def alpha_bar(self) -> torch.Tensor:
        return self.schedule.alpha_bar

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.schedule.add_noise(x0, noise, t)

    def target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.schedule.target(x0, noise, t, self.hparams.prediction)

    def loss(
        self, net: nn.Module, x0: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        b = x0.shape[0]
        t = torch.randint(0, self.hparams.timesteps, (b,), generator=generator).to(self.device)
        noise = torch.randn(x0.shape, generator=generator).to(self.device, x0.dtype)
        prediction = net(self.schedule.add_noise(x0, noise, t), t)
        target = self.schedule.target(x0, noise, t, self.hparams.prediction)
        return F.mse_loss(prediction.float(), target.float())

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
        **conditions,
    ) -> torch.Tensor:
        """``num`` images in [-1, 1] from ``sampler`` (default ``model.sampler``) over ``steps`` (default
        ``model.sample_steps``; ``ddpm`` always takes all T)."""
        reject_conditions(self, conditions)
        net = self.sampling_net
        solver = make_sampler(sampler or self.hparams.sampler, self.schedule, self.hparams.prediction)
        steps = self.hparams.sample_steps if steps is None else steps
        shape = (num, net.channels, net.resolution, net.resolution)
        return sample_loop(net, solver, shape, steps, generator, self.device)

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
