"""Lightning's CSV logger, continued by a resumed run instead of restarted, written at most every few seconds."""

import csv
import time

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from genlab.errors import ConfigError


class _AppendingWriter(ExperimentWriter):
    """Keeps an existing ``metrics.csv`` and appends under its header (Lightning's writer deletes it)."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(csv.DictReader(file).fieldnames or [])


class ContinuingCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``append=True`` (set by the pipeline when resuming from a checkpoint into the same
    run dir) continues ``metrics.csv``: the rows logged before the stop stay, the new steps follow them.

    Rows reach the file at most every ``flush_seconds`` and when the run ends. Lightning's logger connector
    calls ``save()`` after every logged step, which defeats ``flush_logs_every_n_steps``: opening and
    appending to the file then cost ~0.5 ms a logged step. A run killed outright loses at most the last
    ``flush_seconds`` of rows."""

    def __init__(self, *args, append: bool = False, flush_seconds: float = 5.0, **kwargs):
        number = isinstance(flush_seconds, (int, float)) and not isinstance(flush_seconds, bool)
        if not number or flush_seconds < 0:
            raise ConfigError(
                f"logger.csv.flush_seconds must be a number of seconds >= 0 (0: write every logged step), "
                f"got {flush_seconds!r}"
            )
        super().__init__(*args, **kwargs)
        self.append = append
        self.flush_seconds = flush_seconds
        self._saved_at = float("-inf")

    def save(self) -> None:
        pending = self._experiment is not None and self._experiment.metrics
        now = time.monotonic()
        if pending and now - self._saved_at >= self.flush_seconds:
            self._saved_at = now
            super().save()

    def finalize(self, status: str) -> None:
        self._saved_at = float("-inf")  # the run's last rows are written whenever it ends
        super().finalize(status)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and self.append:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return super().experiment
