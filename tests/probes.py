"""Callbacks that tests add from the command line (``+callbacks.<name>._target_=tests.probes.<Class>``)."""

import json
import os
import time
from pathlib import Path

import pytorch_lightning as pl


class JobClock(pl.Callback):
    """Writes ``{"pid", "start", "end"}`` of the fit (wall clock) to ``path``: which process ran a job, and when."""

    def __init__(self, path: str):
        self.path, self.start = Path(path), 0.0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.time()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.path.write_text(json.dumps({"pid": os.getpid(), "start": self.start, "end": time.time()}))
