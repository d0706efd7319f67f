"""Host time per training step that Lightning and torch spend outside the model's math, cut where it buys
nothing (measured by ``bench/train_overhead.py``)."""

import contextlib
import inspect

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.profilers import PassThroughProfiler

_NOTHING = contextlib.nullcontext()


class NullProfiler(PassThroughProfiler):
    """The Trainer's profiler when none is configured (``trainer.profiler=null``): Lightning's default without
    its per-call cost. Lightning wraps every hook of every callback in ``profiler.profile(name)``, about 200
    times per training batch; the default's ``profile`` builds a generator-based context manager each time.
    This one returns one shared no-op context."""

    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        return _NOTHING


def remember_no_cuda() -> None:
    """On a machine without a CUDA driver, makes ``torch.cuda.is_available()`` a constant. Importing Lightning
    sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1``, so each call then tries to load NVML, fails, and is not
    cached; torch's optimizers call it on every ``step()`` (about 0.1 ms each on CPU). torch caches the
    device count only once CUDA is initialised, which never happens here: this records the zero it found."""
    if (
        torch.cuda._is_compiled()
        and torch.cuda.device_count() == 0
        and torch.cuda._cached_device_count is None
    ):
        torch.cuda._cached_device_count = 0


#: Callback hooks Lightning calls on every batch (or optimizer step).
BATCH_HOOKS = (
    "on_train_batch_start",
    "on_train_batch_end",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
)


#: LightningModule hooks Lightning calls on every batch whose default does nothing and returns None.
MODULE_BATCH_HOOKS = (
    "on_train_batch_start",
    "on_before_zero_grad",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
)
#: Steps whose signature Lightning reads on every batch (``inspect.getfullargspec``, ~20-40 us each).
STEP_METHODS = ("training_step", "validation_step", "test_step")


def skip_unused_batch_hooks(callbacks: list[pl.Callback], model: pl.LightningModule) -> None:
    """Lightning calls every per-batch hook of every callback and of the module, overridden or not, each
    inside a profiler context named by the callback's ``state_key`` (about 80 calls a training batch, 1-3 us
    each; a ModelCheckpoint's key is a dict's repr built per call). It skips a hook attribute that is not
    callable: inherited no-op batch hooks become ``None``, as does the batch hook of a ModelCheckpoint that
    saves on epochs only (no ``every_n_train_steps``, no ``train_time_interval``), where it returns at once.
    The module's step methods get their signature precomputed (``__signature__``), which Lightning's
    ``getfullargspec`` per batch then reads instead of rebuilding it."""
    for callback in callbacks:
        for hook in BATCH_HOOKS:
            if getattr(type(callback), hook) is getattr(pl.Callback, hook):
                setattr(callback, hook, None)
        if isinstance(callback, ModelCheckpoint) and epochs_only(callback):
            callback.on_train_batch_end = None
    for hook in MODULE_BATCH_HOOKS:
        if getattr(type(model), hook) is getattr(pl.LightningModule, hook):
            setattr(model, hook, None)
    for name in STEP_METHODS:
        step = getattr(type(model), name, None)
        if inspect.isfunction(step) and "__signature__" not in vars(step):
            step.__signature__ = inspect.signature(step)


def epochs_only(checkpoint: ModelCheckpoint) -> bool:
    """True when ``checkpoint`` saves on epoch or validation ends only, never from a training batch."""
    return checkpoint._every_n_train_steps < 1 and checkpoint._train_time_interval is None
