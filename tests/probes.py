"""Callbacks that tests add to real runs: from the command line (``+callbacks.<name>._target_=tests.probes.<Class>``,
the repository root on PYTHONPATH where the script must import them) or as ``extra_callbacks``."""

import hashlib
import json
import os
import time
from pathlib import Path

import pytorch_lightning as pl
import torch


class JobClock(pl.Callback):
    """Writes ``{"pid", "start", "end"}`` of the fit (wall clock) to ``path``: which process ran a job, and when."""

    def __init__(self, path: str):
        self.path, self.start = Path(path), 0.0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.time()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.path.write_text(json.dumps({"pid": os.getpid(), "start": self.start, "end": time.time()}))


def image_digest(image: torch.Tensor) -> str:
    return hashlib.sha256(image.float().contiguous().numpy().tobytes()).hexdigest()[:16]


class SeenSamples(pl.Callback):
    """Writes ``<path>/seen-rank<r>.json``: a digest of every training image this rank trained on, by epoch."""

    def __init__(self, path: str):
        self.path, self.seen = Path(path), {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        epoch = self.seen.setdefault(str(trainer.current_epoch), [])
        epoch += [image_digest(image) for image in images.cpu()]

    def on_train_end(self, trainer, pl_module) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / f"seen-rank{trainer.global_rank}.json").write_text(json.dumps(self.seen))


class PreemptAtStep(pl.Callback):
    """Preempts the run after optimizer step ``step`` as a SIGTERM does (mid-epoch): genlab's Preemption
    callback saves ``last.ckpt`` and the run stops."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            trainer._signal_connector.received_sigterm = True


class WaitForSignalAfterStep(pl.Callback):
    """After optimizer step ``step`` writes ``path`` and holds the run there until a SIGTERM/SIGINT has been
    received (at most ``timeout`` seconds): a test's signal lands at a known point however slow the machine."""

    def __init__(self, step: int, path: str, timeout: float = 120.0):
        self.step, self.path, self.timeout = step, Path(path), timeout

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step < self.step or self.path.exists():
            return
        self.path.write_text(str(trainer.global_step))
        deadline = time.time() + self.timeout
        while not trainer.received_sigterm and time.time() < deadline:
            time.sleep(0.01)  # Python runs the signal handlers between these sleeps
