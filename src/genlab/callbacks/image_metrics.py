"""FID and KID of a model's samples against the real images of the split evaluated, at its end.

The model only needs ``sample(num, generator=None) -> images in [-1, 1]``. Real-image statistics
belong to the split being evaluated (``test`` under ``trainer.test``, else ``val``): they are
computed once per split (``datamodule.split_id(split)``, extractor) and cached on disk; later
evaluations of that split embed generated images only. Under DDP every rank embeds its share of
the samples and torchmetrics reduces the states, so each sample counts once and the value equals
a single-process evaluation's. The metrics own their real statistics (export, DDP-sharded reload,
reset: :class:`~genlab.metrics.real_stats.RealStatistics`); this callback decides when to update
them, which split, and the sample seeds.
"""

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch

from genlab.errors import ConfigError
from genlab.interfaces import ReportsProtocol
from genlab.metrics.inception import find_inception_weights, to_uint8
from genlab.metrics.real_stats import RealStatisticsCache
from genlab.metrics.suite import ImageMetricSuite, MetricOptions
from genlab.models import GenerativeModel, eval_prefix, log_global
from genlab.models.conditioning import balanced_labels, is_conditional

log = logging.getLogger(__name__)


def evaluation_due(trainer: pl.Trainer, every_n_epochs: int) -> bool:
    """Every ``every_n_epochs`` epochs, at the last epoch, and always outside ``fit`` (not in sanity checks)."""
    if trainer.sanity_checking:
        return False
    epoch = trainer.current_epoch + 1
    return trainer.state.fn != "fit" or epoch % every_n_epochs == 0 or epoch == trainer.max_epochs


class ImageMetrics(pl.Callback, ReportsProtocol):
    """Logs ``val/fid`` (and the metrics enabled: ``val/kid_mean``, ``val/kid_std``, ``val/is_mean``,
    ``val/is_std``, ``val/precision``, ``val/recall``, ``val/density``, ``val/coverage``, ``val/fid_std``,
    ``val/fid_inf``) with ``val/fid_samples``, every ``every_n_epochs`` validations.

    Under ``trainer.test`` the same metrics are logged as ``test/...``, against the test images.

    ``fid``: ``weights_path`` (else ``$GENLAB_FID_WEIGHTS``, else torch hub's cache), ``download``,
    ``bootstrap`` (resamplings for FID's spread) and ``infinity`` (FID extrapolated to infinite samples).
    ``kid``: ``enabled`` and ``subset_size`` (capped by the sample counts); ``isc``: ``enabled``, ``splits``;
    ``prc`` and ``density_coverage``: ``enabled``, ``k``. ``reference``: a statistics file (.npz, see
    :meth:`ImageMetricSuite.save_reference`) used instead of the real images of the split.
    """

    #: What the callback may log under ``val/`` (monitors naming them need FID); runs are ranked on the first.
    metric_names = tuple(
        f"val/{name}"
        for name in (
            "fid",
            "kid_mean",
            "kid_std",
            "is_mean",
            "is_std",
            "precision",
            "recall",
            "density",
            "coverage",
            "fid_std",
            "fid_inf",
            "intra_fid",
        )
    )

    def __init__(
        self,
        fid: dict | None = None,
        kid: dict | None = None,
        isc: dict | None = None,
        prc: dict | None = None,
        density_coverage: dict | None = None,
        intra_fid: dict | None = None,
        num_samples: int = 10_000,
        max_real: int = 10_000,
        batch_size: int = 64,
        cache_dir: str | None = None,
        every_n_epochs: int = 1,
        seed: int = 1234,
        reference: str | None = None,
    ):
        if num_samples < 2 or max_real < 2:
            raise ConfigError("metrics.num_samples and metrics.max_real must be >= 2 for FID")
        fid = dict(fid or {})
        self.options = MetricOptions.from_config(
            fid, dict(kid or {}), dict(isc or {}), dict(prc or {}), dict(density_coverage or {}), intra_fid
        )
        self.weights_path = find_inception_weights(
            fid.get("weights_path"), download=fid.get("download", True)
        )
        self.num_samples, self.max_real, self.batch_size = num_samples, max_real, batch_size
        self.reference = Path(reference) if reference else None
        self.cache = (
            RealStatisticsCache(cache_dir, self.weights_path, max_real)
            if cache_dir and self.weights_path
            else None
        )
        self.every_n_epochs, self.seed = every_n_epochs, seed
        self.suite: ImageMetricSuite | None = None
        self._real_key: str | None = None  # whose real statistics the metrics hold (complete)
        self._eval_key: str | None = None  # the split being evaluated now
        self._cacheable = False  # whether _eval_key names a datamodule's split (cached on disk)
        self._real_seen = 0
        self._split = "val"
        self._protocol: dict = {}

    @property
    def available(self) -> bool:
        return self.weights_path is not None

    # ---- lifecycle ----
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.suite is None:
            if self.options.intra_fid and not is_conditional(pl_module):
                log.warning("Intra-class FID skipped: the model is not class-conditional (data.labels=true).")
                self.options.intra_fid = False
            self.suite = ImageMetricSuite(self.weights_path, self.options)
        self.suite.to(pl_module.device)

    def _active(self, trainer: pl.Trainer) -> bool:
        return evaluation_due(trainer, self.every_n_epochs)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not self._active(trainer):
            return
        dm, self._split = trainer.datamodule, eval_prefix(pl_module)
        self._cacheable = dm is not None and self.reference is None
        self._eval_key = (
            f"reference:{self.reference}"
            if self.reference
            else dm.split_id(self._split)
            if dm
            else self._split
        )
        if self._real_key == self._eval_key:
            return
        # Another split (or dataset): drop the held real statistics, then load or recompute them.
        self.suite.reset_real()
        self._real_seen = 0
        if self.reference:
            self.suite.load_reference(self.reference)
            self.suite.to(pl_module.device)
            self._real_key = self._eval_key
        elif self._load_cache(trainer):
            self._real_key = self._eval_key

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if not self._active(trainer) or self._real_key == self._eval_key:
            return
        real = GenerativeModel.inputs(batch)
        labels = pl_module.batch_labels(batch) if is_conditional(pl_module) else None
        share = self.max_real // trainer.world_size + (
            trainer.global_rank < self.max_real % trainer.world_size
        )
        keep = max(share - self._real_seen, 0)
        real, labels = real[:keep], labels[:keep] if labels is not None else None
        if len(real):
            self.suite.update(to_uint8(real), real=True, labels=labels)
            self._real_seen += len(real)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self._active(trainer):
            return
        if self._real_key != self._eval_key:
            self._save_cache(trainer)
            self._real_key = self._eval_key
        # Batch b of the samples has its own seed and rank b % world draws it: the same images
        # whatever the number of processes (a rank may draw none: the metrics compute all the same).
        # A class-conditional model draws the classes in turn.
        num_batches = -(-self.num_samples // self.batch_size)
        for b in range(trainer.global_rank, num_batches, trainer.world_size):
            start = b * self.batch_size
            stop = min(start + self.batch_size, self.num_samples)
            generator = torch.Generator().manual_seed(self.seed + 1_000_003 * trainer.current_epoch + b)
            if is_conditional(pl_module):
                labels = balanced_labels(start, stop, pl_module.num_classes)
                images = pl_module.sample(stop - start, generator=generator, labels=labels)
            else:
                labels, images = None, pl_module.sample(stop - start, generator=generator)
            self.suite.update(to_uint8(images), real=False, labels=labels)
        values = self.suite.compute()
        log_global(pl_module, {f"{self._split}/{name}": value for name, value in values.items()})
        self._protocol = self.suite.protocol()
        for entry in self._protocol.values():
            entry.update(split=self._split, real_statistics=self._eval_key)
        self.suite.reset()  # keeps the real statistics

    # trainer.test: the same, logged as test/fid, test/kid_*
    on_test_epoch_start = on_validation_epoch_start
    on_test_batch_end = on_validation_batch_end
    on_test_epoch_end = on_validation_epoch_end

    def protocol(self) -> dict:
        """The last evaluation's sample counts and settings, with the split (or reference file) measured."""
        return self._protocol

    # ---- real-statistics cache ----
    def _save_cache(self, trainer: pl.Trainer) -> None:
        if self.cache is None or not self._cacheable:
            return
        stats = self.suite.real_statistics()
        if trainer.is_global_zero:
            self.cache.save(self._eval_key, stats)

    def _load_cache(self, trainer: pl.Trainer) -> bool:
        if self.cache is None or not self._cacheable:
            return False
        stats = self.cache.load(self._eval_key, self.suite.real_keys)
        if stats is None:
            return False
        self.suite.load_real_statistics(stats, trainer.global_rank, trainer.world_size)
        return True
