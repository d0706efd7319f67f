"""A callback for bench/ddp_overhead.py: rank 0 writes the wall time of training batches ``start..stop``.

Added from the command line (with bench/ on ``PYTHONPATH``)::

    python src/train.py +callbacks.step_probe._target_=_step_probe.StepTimer ...

It writes the seconds to the file named by ``$GENLAB_STEP_PROBE`` and stops training.
"""

import os
import time
from pathlib import Path

import pytorch_lightning as pl

ENV = "GENLAB_STEP_PROBE"


class StepTimer(pl.Callback):
    def __init__(self, start: int = 5, stop: int = 25) -> None:
        self.start, self.stop, self.batches, self.t0 = start, stop, 0, 0.0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.batches += 1
        if self.batches == self.start:
            self.t0 = time.perf_counter()
        elif self.batches == self.stop:
            if trainer.is_global_zero:
                Path(os.environ[ENV]).write_text(repr(time.perf_counter() - self.t0))
            trainer.should_stop = True
