"""Non-finite losses and gradients: detected before the optimizer step, logged, handled by a policy."""

import copy
import logging
import math

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import MixedPrecision

from genlab.errors import ConfigError, GenlabError

log = logging.getLogger(__name__)
POLICIES = ("skip", "stop", "rollback")


class DivergenceError(GenlabError, RuntimeError):
    """Training produced NaN/Inf and the policy is ``stop`` (or skipping/rolling back did not help)."""


class DivergenceGuard(pl.Callback):
    """Checks the loss and every gradient before each optimizer step (automatic and manual optimization).

    ``policy``: ``skip`` drops the step (gradients cleared, parameters untouched); ``stop`` raises
    :class:`DivergenceError` naming the step and loss (checkpoints already written stay valid);
    ``rollback`` restores the weights and optimizer states of the last good snapshot (taken every
    ``snapshot_every`` optimizer steps, in memory) and goes on. More than ``max_bad_steps``
    consecutive bad steps stop the run under any policy. ``train/nonfinite_steps`` (logged each epoch)
    counts them.

    Under ``16-mixed`` a gradient scaler owns overflow: infinite gradients of a finite loss are its
    scale being too high, and it skips that step and lowers the scale itself, so they are not divergence.
    """

    def __init__(self, policy: str = "skip", max_bad_steps: int = 20, snapshot_every: int = 100):
        if policy not in POLICIES:
            raise ConfigError(f"divergence policy {policy!r} is unknown; choose one of {POLICIES}")
        self.policy, self.max_bad_steps, self.snapshot_every = policy, max_bad_steps, snapshot_every
        self.loss = torch.tensor(float("nan"))
        self.bad_steps = self.consecutive = 0
        self.snapshot: dict | None = None

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        self.loss = loss.detach()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log(  # once per epoch: self.log is not free
            "train/nonfinite_steps", float(self.bad_steps), sync_dist=True, reduce_fx="max"
        )

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = pl_module.gradient_check(optimizer)  # finite iff every gradient is; reused by norm clipping
        if math.isfinite(float(grads + self.loss.float().sum())):  # the step's one host sync
            self.consecutive = 0
            if self.policy == "rollback" and trainer.global_step % self.snapshot_every == 0:
                self._take_snapshot(trainer, pl_module)
            return
        scaler = grad_scaler(trainer)
        if scaler is not None and bool(torch.isfinite(self.loss).all()):
            return  # the scaler's overflow: it skips this step and lowers its scale
        self.bad_steps += 1
        self.consecutive += 1
        loss = float(self.loss) / (scaler.get_scale() if scaler is not None else 1.0)  # the loss backward saw
        what = f"non-finite loss or gradient at step {trainer.global_step} (loss={loss})"
        if self.policy == "stop" or self.consecutive > self.max_bad_steps:
            raise DivergenceError(
                f"Training diverged: {what}, {self.consecutive} bad step(s) in a row. Checkpoints written "
                "so far are intact; resume from one with a lower model.lr, gradient clipping, or "
                "callbacks.divergence.policy=skip|rollback."
            )
        optimizer.zero_grad(set_to_none=True)  # either policy drops this step's update
        if self.policy == "rollback" and self.snapshot is not None:
            pl_module.load_state_dict(self.snapshot["model"])
            for opt, state in zip(trainer.optimizers, self.snapshot["optimizers"]):
                opt.load_state_dict(state)
            log.warning("%s: rolled back to the snapshot of step %d", what, self.snapshot["step"])
        else:
            log.warning("%s: step skipped", what)

    def _take_snapshot(self, trainer, pl_module) -> None:
        self.snapshot = {
            "step": trainer.global_step,
            "model": copy.deepcopy(pl_module.state_dict()),
            "optimizers": [copy.deepcopy(opt.state_dict()) for opt in trainer.optimizers],
        }


def grad_scaler(trainer: pl.Trainer) -> torch.amp.GradScaler | None:
    """The gradient scaler of ``16-mixed`` training (None under other precisions)."""
    plugin = trainer.precision_plugin
    return plugin.scaler if isinstance(plugin, MixedPrecision) else None
