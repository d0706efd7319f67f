"""LightningModules: how each model family is trained and sampled.

:class:`GenerativeModel` holds what every family shares: batch unpacking, the test stage as a second
run of validation under ``test/`` names, training scalars logged on the steps the loggers write,
and optimizers with their LR schedule built from config (a ``_partial_`` optimizer, parameter groups
declared beside the network). A family writes its loss and its sampling; see docs/adding-a-family.md.
"""

import functools
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.strategies import DDPStrategy, SingleDeviceStrategy
from torch import nn

from genlab.models.schedules import make_schedule
from genlab.utils.ema import EMA

OptimizerFactory = Callable[..., torch.optim.Optimizer]  # a `_partial_: true` optimizer config
FUSED = (torch.optim.Adam, torch.optim.AdamW)  # optimizers with a fused kernel (one pass over all tensors)
FUSED_DEVICES = ("cpu", "cuda")
IMPLEMENTATION_KEYS = {"fused", "foreach", "differentiable"}  # an optimizer config choosing its kernel


def eval_prefix(module: pl.LightningModule) -> str:
    """``test`` inside ``trainer.test``, else ``val``: evaluation metrics are namespaced by stage."""
    return "test" if module.trainer.testing else "val"


def log_global(module: pl.LightningModule, metrics: dict[str, Any], **kwargs) -> None:
    """Logs values that every rank already holds alike (computed from synchronised metric states, e.g.
    FID of the gathered features). They are logged as synchronised with ``max``, which of equal values is
    each of them exactly: Lightning neither averages them again nor warns under DDP that they were not."""
    module.log_dict(metrics, sync_dist=True, reduce_fx="max", **kwargs)


def nonfinite_flag(tensors: list[torch.Tensor]) -> torch.Tensor:
    """0.0 when every element of ``tensors`` is finite, else NaN. One multi-tensor kernel per device and
    dtype (the gradient scaler's check, unscaling by 1, which leaves every value as it is): about 4x faster
    on CPU than a sum per tensor for a UNet's ~200 tensors, which launches a kernel each."""
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    device = tensors[0].device
    found = torch.zeros(1, device=device)
    for (where, _), group in groups.items():
        flag = torch.zeros(1, device=where)
        torch._amp_foreach_non_finite_check_and_unscale_(group, flag, torch.ones(1, device=where))
        found += flag.to(device)
    return torch.where(found > 0, float("nan"), 0.0).squeeze(0)


class GenerativeModel(pl.LightningModule):
    """What the pipeline needs to know about a model family, declared by the family (never probed)."""

    #: What the model trains on and generates: "image" or "text" (a datamodule of the same modality).
    modality: ClassVar[str] = "image"
    #: Checkpoint selection when FID/KID are unavailable (no Inception weights); None: keep the last epoch.
    fallback_metric: ClassVar[str | None] = None
    #: True when some backward passes leave parameters without gradients (the GAN's D step never reaches
    #: G): DDP must then search the autograd graph for unused parameters on every step, which costs time.
    ddp_find_unused_parameters: ClassVar[bool] = False
    #: Keyword options of ``sample`` that ``sample.py`` may pass (e.g. a diffusion sampler and its steps).
    sample_options: ClassVar[tuple[str, ...]] = ()
    #: The optimizer when the config gives none (``model.optimizer``).
    default_optimizer: ClassVar[type[torch.optim.Optimizer]] = torch.optim.AdamW
    #: Training scalars (names without ``train/``) shown in the progress bar.
    progress_bar: ClassVar[tuple[str, ...]] = ("loss",)

    @classmethod
    def configure_run(cls, cfg: DictConfig) -> None:
        """Adjusts a run's config before the data and the model are built (e.g. the shape and tokenizer of
        pretrained weights); the stored config then says what was built. Nothing by default."""

    def __init__(self, optimizer: OptimizerFactory | None = None):
        super().__init__()
        self.optimizer_factory = optimizer
        self._grad_norm: tuple[torch.optim.Optimizer, torch.Tensor] | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets _current_fx_name around each of its ~25 hook calls per batch; nn.Module's
        # __setattr__ checks every value against Parameter, Buffer and Module first (~2 us each).
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # ---- batches and stages ----
    @staticmethod
    def inputs(batch: Any) -> torch.Tensor:
        """The examples of a batch: a tensor, or the first element of ``(examples, labels, ...)``."""
        return batch[0] if isinstance(batch, (list, tuple)) else batch

    @property
    def eval_prefix(self) -> str:
        return eval_prefix(self)

    def test_step(self, batch: Any, batch_idx: int) -> Any:
        return self.validation_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self.on_validation_epoch_end()

    # ---- training ----
    def training_loss(self, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        """(loss to minimise, scalars to log under ``train/``) at optimizer step ``step``."""
        raise NotImplementedError

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, scalars = self.training_loss(batch, self.global_step)
        self.log_train(scalars, batch_idx)
        return loss

    def update_averages(self) -> None:
        """Updates EMA copies after an optimizer step (none by default)."""

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.automatic_optimization:  # manual optimization updates after its own steps
            self.update_averages()

    def log_train(self, scalars: dict[str, torch.Tensor | float], batch_idx: int) -> None:
        """Logs ``train/<name>`` only on the steps the loggers write and on an epoch's last batch: each
        ``self.log`` costs host time, and values logged between writes are never seen."""
        trainer = self.trainer
        last = batch_idx + 1 == trainer.num_training_batches
        if not (last or trainer._logger_connector.should_update_logs):
            return
        for name, value in scalars.items():
            self.log(f"train/{name}", value, prog_bar=name in self.progress_bar)

    # ---- gradients ----
    def gradient_check(self, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """A scalar that is finite exactly when every gradient of ``optimizer`` is, for the divergence guard:
        the total 2-norm when norm clipping (``trainer.gradient_clip_val``) follows and reuses it, else
        :func:`nonfinite_flag` (one multi-tensor pass over the gradients)."""
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return torch.zeros(())
        if self.automatic_optimization and self.trainer.gradient_clip_val:
            norm = torch.nn.utils.get_total_norm(grads)
            self._grad_norm = (optimizer, norm)
            return norm
        return nonfinite_flag(grads)

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        known, self._grad_norm = self._grad_norm, None
        reuse = (
            gradient_clip_val
            and gradient_clip_algorithm in (None, "norm")
            and known is not None
            and known[0] is optimizer
            and type(self.trainer.strategy) in (SingleDeviceStrategy, DDPStrategy)  # not sharded (FSDP)
        )
        if not reuse:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grads_with_norm_(params, gradient_clip_val, known[1])

    # ---- optimizers ----
    def param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups of the optimizer (overridden where a network declares its own, e.g. weight
        decay on matrices only); by default every trainable parameter, EMA copies excluded."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def make_optimizer(
        self, params: list[dict[str, Any]] | Iterable[nn.Parameter], **overrides
    ) -> torch.optim.Optimizer:
        """The configured optimizer (``model.optimizer``, a ``_partial_`` config) on ``params``; without
        one, :attr:`default_optimizer` with the model's ``lr`` (``betas``, ``weight_decay``) hparams.
        Adam and AdamW use their fused kernel on CPU and CUDA (the same update to float rounding, 3-5x faster
        than the per-tensor loop torch uses on CPU by default), except under ``16-mixed``, where Lightning's
        norm clipping needs the gradient scaler to unscale (a fused optimizer unscales inside its step), and where
        the config chooses an implementation (``fused``, ``foreach``, ``differentiable``)."""
        factory = self.optimizer_factory
        if factory is None:
            settings = {k: self.hparams[k] for k in ("lr", "betas", "weight_decay") if k in self.hparams}
            if "betas" in settings:
                settings["betas"] = tuple(settings["betas"])
            factory = functools.partial(self.default_optimizer, **settings)
        scaled = self._trainer is not None and str(self._trainer.precision) == "16-mixed"
        chosen = IMPLEMENTATION_KEYS & {**getattr(factory, "keywords", {}), **overrides}.keys()
        fusable = getattr(factory, "func", factory) in FUSED and self.device.type in FUSED_DEVICES
        if fusable and not (scaled or chosen):
            overrides["fused"] = True
        return factory(params, **overrides)

    def with_schedule(self, optimizer: torch.optim.Optimizer, total_steps: int, name: str = "lr") -> dict:
        """``optimizer`` with the configured LR schedule (``lr_schedule``, ``warmup_steps``,
        ``final_lr_ratio``), stepped every optimizer step, in Lightning's format."""
        hp = self.hparams
        schedule = make_schedule(
            optimizer, hp.lr_schedule, total_steps, hp.get("warmup_steps", 0), hp.get("final_lr_ratio", 0.0)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": schedule, "interval": "step", "name": name},
        }

    def build_optimizers(self, total_steps: int) -> list[dict]:
        """Optimizers and schedules for a run of ``total_steps`` steps (the benchmark's plain loop calls
        this too); one optimizer over :meth:`param_groups` unless a family needs more."""
        return [self.with_schedule(self.make_optimizer(self.param_groups()), total_steps)]

    def configure_optimizers(self) -> list[dict]:
        return self.build_optimizers(int(self.trainer.estimated_stepping_batches))

    # ---- exponential moving averages ----
    @staticmethod
    def make_ema(net: nn.Module, decay: float | None) -> EMA | None:
        return EMA(net, decay) if decay else None

    @staticmethod
    def averaged(net: nn.Module, ema: EMA | None) -> nn.Module:
        """The network used to sample and evaluate: its EMA copy when there is one."""
        return ema.module if ema is not None else net
