"""Host time per training step that Lightning and torch spend outside the model's math, cut where it buys
nothing (measured by ``bench/train_overhead.py``)."""

import contextlib

import pytorch_lightning as pl
import torch
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


def skip_unused_batch_hooks(callbacks: list[pl.Callback]) -> None:
    """Lightning calls every per-batch hook of every callback, overridden or not, each inside a profiler
    context named by the callback's ``state_key`` (about 80 calls a training batch, 1-3 us each). It skips
    a hook attribute that is not callable: each callback's inherited no-op batch hooks become ``None``."""
    for callback in callbacks:
        for hook in BATCH_HOOKS:
            if getattr(type(callback), hook) is getattr(pl.Callback, hook):
                setattr(callback, hook, None)
