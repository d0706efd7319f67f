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
    """Writes ``{"pid", "start", "end", "met"}`` of the fit (wall clock) to ``path``: which process ran a job,
    and when. With ``meet`` (a folder shared by a sweep's jobs), each job's fit starts by waiting, up to
    ``timeout`` seconds, until ``jobs`` jobs have arrived there: jobs that run in parallel all meet (``met``)
    however a loaded machine staggers their start-up; jobs run one after another cannot."""

    def __init__(self, path: str, meet: str | None = None, jobs: int = 2, timeout: float = 120.0):
        self.path, self.start, self.met = Path(path), 0.0, None
        self.meet, self.jobs, self.timeout = meet and Path(meet), jobs, timeout

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.time()
        if self.meet:
            self.meet.mkdir(parents=True, exist_ok=True)
            (self.meet / str(os.getpid())).touch()
            while len(list(self.meet.iterdir())) < self.jobs and time.time() < self.start + self.timeout:
                time.sleep(0.1)
            self.met = len(list(self.meet.iterdir())) >= self.jobs

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        record = {"pid": os.getpid(), "start": self.start, "end": time.time(), "met": self.met}
        self.path.write_text(json.dumps(record))


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
