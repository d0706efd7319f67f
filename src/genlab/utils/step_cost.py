"""Host time per training step that Lightning and torch spend outside the model's math, cut where it buys
nothing (measured by ``bench/train_overhead.py``)."""

import contextlib

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
