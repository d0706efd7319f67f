"""GAN LightningModule: alternating discriminator / generator updates with manual optimization.

Step accounting: every batch makes one D step, and every ``n_critic``-th batch also one G step.
Lightning's ``trainer.global_step`` counts *optimizer* steps (D + G), so budget GAN runs with
``trainer.max_epochs`` (or ``limit_train_batches``), not ``max_steps``.
"""

import logging

import torch
from torch import nn

from genlab.errors import ConfigError
from genlab.models import GenerativeModel, eval_prefix, gan_losses
from genlab.models.schedules import make_schedule
from genlab.utils.ema import EMA

log = logging.getLogger(__name__)
COLLAPSE_CHECK_EVERY = 10


class GAN(GenerativeModel):
    fallback_metric = None  # D(x)/D(G(z)) do not rank generators: without FID, keep the last epoch
    ddp_find_unused_parameters = True  # the D step never reaches G; the G step leaves D frozen

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
    ):
        super().__init__()
        if loss not in gan_losses.LOSSES:
            raise ConfigError(f"model.loss={loss!r} is unknown; choose one of {gan_losses.LOSSES}")
        if loss == "wgan_gp" and getattr(discriminator, "norm", None) == "batch":
            raise ConfigError(
                "WGAN-GP's per-sample gradient penalty is invalid with BatchNorm in the discriminator: "
                "set model.discriminator.norm=none (or spectral)."
            )
        if lr <= 0 or (d_lr is not None and d_lr <= 0):
            raise ConfigError(f"Learning rates must be positive, got model.lr={lr}, model.d_lr={d_lr}")
        if n_critic < 1:
            raise ConfigError(f"model.n_critic must be >= 1, got {n_critic}")
        self.save_hyperparameters(ignore=["generator", "discriminator"])
        self.automatic_optimization = False
        self.generator = generator
        self.discriminator = discriminator
        self.g_ema = EMA(generator, ema_decay) if ema_decay else None
        self.collapse_streak = torch.zeros(())  # consecutive D steps with D(x) > 0.99, D(G(z)) < 0.01
        self.d_steps, self.collapsed = 0, False

    # ---- sampling (the interface the image callbacks use) ----
    @property
    def latent_dim(self) -> int:
        return self.generator.latent_dim

    def noise(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(num, self.latent_dim, generator=generator).to(self.device)

    @torch.no_grad()
    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``num`` images in [-1, 1], from the EMA generator when there is one."""
        net = self.g_ema.module if self.g_ema is not None else self.generator
        return net(self.noise(num, generator)).float().clamp(-1, 1)

    # ---- training ----
    def training_step(self, batch, batch_idx: int) -> None:
        real = batch[0] if isinstance(batch, (list, tuple)) else batch
        opt_g, opt_d = self.optimizers()
        kind = self.hparams.loss

        # Discriminator step (G's output is detached, so G's parameters get no gradient).
        self.toggle_optimizer(opt_d)
        fake = self.generator(self.noise(real.shape[0])).detach()
        real_logits, fake_logits = self.discriminator(real), self.discriminator(fake)
        d_loss = gan_losses.d_loss(kind, real_logits, fake_logits)
        if kind == "wgan_gp":
            gp = gan_losses.gradient_penalty(self.discriminator, real, fake.to(real.dtype))
            self.log("train/gp", gp)
            d_loss = d_loss + self.hparams.gp_weight * gp
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        self.untoggle_optimizer(opt_d)
        self.log_dict(
            {
                "train/d_loss": d_loss,
                "train/d_x": self._score(real_logits),
                "train/d_g_z": self._score(fake_logits),
            },
            prog_bar=True,
        )
        self._watch_collapse(real_logits, fake_logits)

        # Generator step every n_critic batches (D's parameters are frozen by toggle_optimizer).
        if (batch_idx + 1) % self.hparams.n_critic == 0:
            self.toggle_optimizer(opt_g)
            g_loss = gan_losses.g_loss(kind, self.discriminator(self.generator(self.noise(real.shape[0]))))
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            opt_g.step()
            self.untoggle_optimizer(opt_g)
            if self.g_ema is not None:
                self.g_ema.update(self.generator)
            self.log("train/g_loss", g_loss, prog_bar=True)

        for scheduler in self.lr_schedulers():
            scheduler.step()

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
        real = batch[0] if isinstance(batch, (list, tuple)) else batch
        fake = self.sample(real.shape[0]).to(real.dtype)
        self.log_dict(
            {
                f"{eval_prefix(self)}/d_x": self._score(self.discriminator(real)),
                f"{eval_prefix(self)}/d_g_z": self._score(self.discriminator(fake)),
            },
            sync_dist=True,
        )

    test_step = validation_step

    def configure_optimizers(self):
        hp = self.hparams
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=hp.lr, betas=tuple(hp.betas))
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=hp.d_lr or hp.lr, betas=tuple(hp.betas))
        total = int(self.trainer.estimated_stepping_batches)
        return [
            {
                "optimizer": opt,
                "lr_scheduler": {"scheduler": make_schedule(opt, hp.lr_schedule, total), "name": name},
            }
            for opt, name in ((opt_g, "lr/generator"), (opt_d, "lr/discriminator"))
        ]
