"""Denoising diffusion (DDPM, Ho et al. 2020) sampled with ancestral DDPM, DDIM or DPM-Solver++(2M).

The noise process and the eps / v parametrisation live in :mod:`genlab.diffusion.schedule`, the
samplers in :mod:`genlab.diffusion.samplers`. Sampling and validation use the EMA network when
``ema_decay`` is set. With ``num_classes`` (filled from labelled data: ``data.labels=true``) the model is
class-conditional with classifier-free guidance (:mod:`genlab.diffusion.guidance`): labels dropped with
probability ``cond_drop_prob`` in training, ``guidance`` the scale at sampling.
"""

import torch
import torch.nn.functional as F
from torch import nn

from genlab.diffusion import (
    PREDICTIONS,
    SAMPLERS,
    Guided,
    NoiseSchedule,
    drop_labels,
    make_sampler,
    sample_loop,
)
from genlab.errors import ConfigError
from genlab.interfaces import ImageGenerator, reject_conditions
from genlab.models import GenerativeModel, OptimizerFactory
from genlab.models.conditioning import ClassConditional, check_num_classes


class Diffusion(ClassConditional, GenerativeModel, ImageGenerator):
    fallback_metric = "val/loss"
    sample_options = ("sampler", "steps", *ClassConditional.sample_options, "guidance")  # sample.py's options

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
        num_classes: int | None = None,
        cond_drop_prob: float = 0.1,
        guidance: float = 2.0,
        optimizer: OptimizerFactory | None = None,
    ):
        super().__init__(optimizer)
        check_num_classes(num_classes, net=net)
        if prediction not in PREDICTIONS:
            raise ConfigError(f"model.prediction must be 'eps' or 'v', got {prediction!r}")
        if sampler not in SAMPLERS:
            raise ConfigError(f"model.sampler must be one of {tuple(SAMPLERS)}, got {sampler!r}")
        self.save_hyperparameters(ignore=["net", "optimizer"])
        self.net = net
        self.ema = self.make_ema(net, ema_decay)
        self.schedule = NoiseSchedule(schedule, timesteps)

    # ---- the forward process (genlab.diffusion.schedule) and the training objective ----
    def loss(
        self,
        net: nn.Module,
        x0: torch.Tensor,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b = x0.shape[0]
        t = torch.randint(0, self.hparams.timesteps, (b,), generator=generator).to(self.device)
        noise = torch.randn(x0.shape, generator=generator).to(self.device, x0.dtype)
        x_t = self.schedule.add_noise(x0, noise, t)
        prediction = net(x_t, t, labels) if self.conditional else net(x_t, t)
        target = self.schedule.target(x0, noise, t, self.hparams.prediction)
        return F.mse_loss(prediction.float(), target.float())

    # ---- sampling ----
    @property
    def sampling_net(self) -> nn.Module:
        return self.averaged(self.net, self.ema)

    @torch.no_grad()
    def sample(
        self,
        num: int,
        generator: torch.Generator | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        labels: torch.Tensor | list[int] | None = None,
        guidance: float | None = None,
        **conditions,
    ) -> torch.Tensor:
        """``num`` images in [-1, 1] from ``sampler`` (default ``model.sampler``) over ``steps`` (default
        ``model.sample_steps``; ``ddpm`` always takes all T). A conditional model draws class ``labels``
        (default: uniform from ``generator``) at guidance scale ``guidance`` (default ``model.guidance``)."""
        if conditions:
            raise ConfigError(f"Diffusion takes labels and guidance as conditions, not {sorted(conditions)}.")
        if guidance is not None and not self.conditional:
            reject_conditions(self, {"guidance": guidance})
        labels = self.sample_labels(num, labels, generator)
        net = self.sampling_net
        shape = (num, net.channels, net.resolution, net.resolution)
        if labels is not None:
            net = Guided(net, labels, self.hparams.guidance if guidance is None else guidance)
        solver = make_sampler(sampler or self.hparams.sampler, self.schedule, self.hparams.prediction)
        steps = self.hparams.sample_steps if steps is None else steps
        return sample_loop(net, solver, shape, steps, generator, self.device)

    # ---- training ----
    def training_loss(self, batch, step: int) -> tuple[torch.Tensor, dict]:
        labels = self.batch_labels(batch)
        if labels is not None:
            labels = drop_labels(labels, self.net.null_label, self.hparams.cond_drop_prob)
        loss = self.loss(self.net, self.inputs(batch), labels=labels)
        return loss, {"loss": loss}

    def update_averages(self) -> None:
        if self.ema is not None:
            self.ema.update(self.net)

    def validation_step(self, batch, batch_idx: int) -> None:
        # Fixed timesteps and noise per batch: validation losses are comparable across epochs.
        generator = torch.Generator().manual_seed(10_000 + batch_idx)
        loss = self.loss(self.sampling_net, self.inputs(batch), generator, self.batch_labels(batch))
        self.log(f"{self.eval_prefix}/loss", loss, prog_bar=True, sync_dist=True)
