"""A callback for bench/startup.py: marks the end of the first training batch and stops training.

Added from the command line (with bench/ on ``PYTHONPATH``)::

    python src/train.py +callbacks.startup_probe._target_=_startup_probe.FirstStep ...

It writes ``time.time()`` to the file named by ``$GENLAB_STARTUP_PROBE`` once.
"""

import os
import time
from pathlib import Path

import pytorch_lightning as pl

ENV = "GENLAB_STARTUP_PROBE"


class FirstStep(pl.Callback):
    def __init__(self) -> None:
        self.done = False

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.done:
            return
        self.done = True
        Path(os.environ[ENV]).write_text(repr(time.time()))
        trainer.should_stop = True
