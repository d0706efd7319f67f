"""Lightning's rich progress bar, redrawn at a human rate rather than once per batch."""

import time

from pytorch_lightning.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    """:class:`RichProgressBar` whose training bar takes a batch's count and metrics at most
    ``refresh_rate`` times a second (and on an epoch's last batch). Lightning's bar reads the metrics and
    redraws after every batch, and draws from a thread at ``refresh_rate`` (100 by default). A redraw is
    Python work that holds the GIL and a core: on the 2-core dev machine 0.8 ms with output to a pipe and
    4.5 ms to a terminal, so at 10 a second the bar took 3.5 % of a GPT run's wall time in a terminal;
    at 2 a second, 0.9 %."""

    def __init__(self, refresh_rate: int = 2, **kwargs):
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self._drawn_at = float("-inf")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.monotonic()
        last = batch_idx + 1 == trainer.num_training_batches
        if last or now - self._drawn_at >= 1 / max(self.refresh_rate, 1):
            self._drawn_at = now
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
