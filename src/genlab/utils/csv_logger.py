"""Lightning's CSV logger, continued by a resumed run instead of restarted."""

import csv

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    """Keeps an existing ``metrics.csv`` and appends under its header (Lightning's writer deletes it)."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(csv.DictReader(file).fieldnames or [])


class ContinuingCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``append=True`` (set by the pipeline when resuming from a checkpoint into the same
    run dir) continues ``metrics.csv``: the rows logged before the stop stay, the new steps follow them."""

    def __init__(self, *args, append: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.append = append

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and self.append:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return super().experiment
