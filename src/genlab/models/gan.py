"""GAN LightningModule: alternating discriminator / generator updates with manual optimization.

Step accounting: every batch makes one D step, and every ``n_critic``-th batch also one G step.
Lightning's ``trainer.global_step`` counts *optimizer* steps (D + G), so budget GAN runs with
``trainer.max_epochs`` (or ``limit_train_batches``), not ``max_steps``.

With ``num_classes`` (filled from labelled data, ``data.labels=true``) G and D are class-conditional
(conditional BatchNorm, projection discriminator): fakes of a batch are drawn for its real labels.
"""

import contextlib
import functools
import logging
import warnings

import torch
from torch import nn

from genlab.errors import ConfigError
from genlab.interfaces import ImageGenerator, reject_conditions
from genlab.models import GenerativeModel, OptimizerFactory, gan_losses
from genlab.models.conditioning import ClassConditional, check_num_classes

log = logging.getLogger(__name__)
COLLAPSE_CHECK_EVERY = 10
SCHEDULE_BEFORE_STEP = r"Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`"


class GAN(ClassConditional, GenerativeModel, ImageGenerator):
    fallback_metric = None  # D(x)/D(G(z)) do not rank generators: without FID, keep the last epoch
    ddp_find_unused_parameters = True  # the D step never reaches G; the G step leaves D frozen
    default_optimizer = torch.optim.Adam
    progress_bar = ("d_loss", "d_x", "d_g_z", "g_loss")

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss: str = "non_saturating",
        lr: float = 2e-4,
        d_lr: float | None = None,
        betas: tuple[float, float] = (0.5, 0.999),
        n_critic: int = 1,
        gp_weight: float = 10.0,
        grad_clip: float | None = None,
        lr_schedule: str = "constant",
        ema_decay: float | None = 0.999,
        collapse_patience: int = 200,
        num_classes: int | None = None,
        optimizer: OptimizerFactory | None = None,
    ):
        super().__init__(optimizer)
        check_num_classes(num_classes, generator=generator, discriminator=discriminator)
        if loss not in gan_losses.LOSSES:
            raise ConfigError(f"model.loss={loss!r} is unknown; choose one of {gan_losses.LOSSES}")
        if loss == "wgan_gp" and getattr(discriminator, "norm", None) == "batch":
            raise ConfigError(
                "WGAN-GP's per-sample gradient penalty is invalid with BatchNorm in the discriminator: "
                "set model.discriminator.norm=none (or spectral)."
            )
        if n_critic < 1:
            raise ConfigError(f"model.n_critic must be >= 1, got {n_critic}")
        self.save_hyperparameters(ignore=["generator", "discriminator", "optimizer"])
        self.automatic_optimization = False
        self.generator = generator
        self.discriminator = discriminator
        self.g_ema = self.make_ema(generator, ema_decay)
        self.collapse_streak = torch.zeros(())  # consecutive D steps with D(x) > 0.99, D(G(z)) < 0.01
        self.d_steps, self.collapsed = 0, False

    # ---- sampling (the interface the image callbacks use) ----
    @property
    def latent_dim(self) -> int:
        return self.generator.latent_dim

    def noise(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(num, self.latent_dim, generator=generator).to(self.device)

    @torch.no_grad()
    def sample(
        self,
        num: int,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | list[int] | None = None,
        **conditions,
    ) -> torch.Tensor:
        """``num`` images in [-1, 1], from the EMA generator when there is one; a conditional GAN draws
        class ``labels`` (default: uniform from ``generator``)."""
        reject_conditions(self, conditions)
        labels = self.sample_labels(num, labels, generator)
        net = self.averaged(self.generator, self.g_ema)
        return net(self.noise(num, generator), labels).float().clamp(-1, 1)

    # ---- training ----
    def discriminator_loss(
        self, real: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """D's loss on ``real`` and on detached fakes (G gets no gradient), and the scalars to log."""
        kind = self.hparams.loss
        fake = self.generator(self.noise(real.shape[0]), labels).detach()
        real_logits, fake_logits = self.discriminator(real, labels), self.discriminator(fake, labels)
        loss = gan_losses.d_loss(kind, real_logits, fake_logits)
        scalars = {"d_x": self._score(real_logits), "d_g_z": self._score(fake_logits)}
        if kind == "wgan_gp":
            critic = functools.partial(self.discriminator, labels=labels)
            scalars["gp"] = gan_losses.gradient_penalty(critic, real, fake.to(real.dtype))
            loss = loss + self.hparams.gp_weight * scalars["gp"]
        self._watch_collapse(real_logits, fake_logits)
        return loss, {"d_loss": loss, **scalars}

    def generator_loss(self, num: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        fake = self.generator(self.noise(num), labels)
        return gan_losses.g_loss(self.hparams.loss, self.discriminator(fake, labels))

    def generator_steps(self, batch_idx: int) -> bool:
        """Whether batch ``batch_idx`` also makes a G step (every ``n_critic``-th)."""
        return (batch_idx + 1) % self.hparams.n_critic == 0

    def training_step(self, batch, batch_idx: int) -> None:
        real, labels = self.inputs(batch), self.batch_labels(batch)
        opt_g, opt_d = self.optimizers()
        # toggle_optimizer freezes the other network's parameters during each step.
        self.toggle_optimizer(opt_d)
        d_loss, scalars = self.discriminator_loss(real, labels)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        if self.generator_steps(batch_idx):
            self.toggle_optimizer(opt_g)
            g_loss = self.generator_loss(real.shape[0], labels)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            opt_g.step()
            self.untoggle_optimizer(opt_g)
            self.update_averages()
            scalars["g_loss"] = g_loss
        self.log_train(scalars, batch_idx)
        self.step_schedules()

    def step_schedules(self) -> None:
        """Both LR schedules advance once per batch. With ``n_critic`` > 1, G's schedule first steps before
        G's optimizer has, which torch flags as a misordered call: by design here, so silenced."""
        schedulers = self.lr_schedulers()
        first = schedulers[0].last_epoch == 0  # torch checks the order on a schedule's first step only
        with warnings.catch_warnings() if first else contextlib.nullcontext():
            if first:
                warnings.filterwarnings("ignore", SCHEDULE_BEFORE_STEP, UserWarning)
            for scheduler in schedulers:
                scheduler.step()

    def update_averages(self) -> None:
        if self.g_ema is not None:
            self.g_ema.update(self.generator)

    def _watch_collapse(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> None:
        """Counts the D steps in a row in which D separates real from fake almost perfectly (non-saturating
        loss): G then learns from vanishing gradients. The streak stays a tensor (no host sync per step)
        and is read every ``COLLAPSE_CHECK_EVERY`` D steps and at epoch end."""
        if not self.hparams.collapse_patience or self.hparams.loss != "non_saturating":
            return
        separated = (self._score(real_logits) > 0.99) & (self._score(fake_logits) < 0.01)
        self.collapse_streak = (self.collapse_streak + 1) * separated
        self.d_steps += 1
        if self.d_steps % COLLAPSE_CHECK_EVERY == 0:
            self._check_collapse()

    def _check_collapse(self) -> None:
        streak = int(self.collapse_streak)
        if self.collapsed or streak < self.hparams.collapse_patience:
            return
        self.collapsed = True
        log.warning(
            "Discriminator collapse at step %d: D(x)>0.99 and D(G(z))<0.01 for %d D steps in a row; the "
            "generator gets almost no gradient. Try a lower model.d_lr, model.discriminator.norm=spectral "
            "or model.loss=hinge.",
            self.global_step,
            streak,
        )

    def on_train_epoch_end(self) -> None:
        if self.hparams.collapse_patience and self.hparams.loss == "non_saturating":
            self._check_collapse()
            self.log("train/d_collapsed", float(self.collapsed), sync_dist=True, reduce_fx="max")

    def _score(self, logits: torch.Tensor) -> torch.Tensor:
        """D's mean output: a probability for the BCE loss, the raw critic score otherwise."""
        logits = logits.detach().float()
        return torch.sigmoid(logits).mean() if self.hparams.loss == "non_saturating" else logits.mean()

    def on_before_optimizer_step(self, optimizer) -> None:
        # Runs after AMP unscaling, so the clip threshold applies to true gradients (Lightning #18089).
        if self.hparams.grad_clip:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm"
            )

    def validation_step(self, batch, batch_idx: int) -> None:
        real, labels = self.inputs(batch), self.batch_labels(batch)
        fake = self.sample(real.shape[0], labels=labels).to(real.dtype)
        self.log_dict(
            {
                f"{self.eval_prefix}/d_x": self._score(self.discriminator(real, labels)),
                f"{self.eval_prefix}/d_g_z": self._score(self.discriminator(fake, labels)),
            },
            sync_dist=True,
        )

    def build_optimizers(self, total_steps: int) -> list[dict]:
        """Adam for G at ``lr`` and for D at ``d_lr`` (default ``lr``), each with the LR schedule; the
        schedules are stepped once per batch by :meth:`training_step`."""
        hp = self.hparams
        opt_g = self.make_optimizer(self.generator.parameters(), lr=hp.lr)
        opt_d = self.make_optimizer(self.discriminator.parameters(), lr=hp.d_lr or hp.lr)
        return [
            self.with_schedule(opt_g, total_steps, "lr/generator"),
            self.with_schedule(opt_d, total_steps, "lr/discriminator"),
        ]
