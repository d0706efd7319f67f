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

import pytorch_lightning as pl
import torch

from genlab.errors import ConfigError
from genlab.metrics.fid import FastFID
from genlab.metrics.inception import InceptionFeatures, find_inception_weights, to_uint8
from genlab.metrics.kid import KID
from genlab.metrics.real_stats import RealStatistics, RealStatisticsCache
from genlab.models import eval_prefix


class ImageMetrics(pl.Callback):
    """Logs ``val/fid`` (and ``val/kid_mean``, ``val/kid_std``) every ``every_n_epochs`` validations.

    Under ``trainer.test`` the same metrics are logged as ``test/...``, against the test images.

    ``fid``: ``weights_path`` (else ``$GENLAB_FID_WEIGHTS``, else torch hub's cache) and ``download``.
    ``kid``: ``enabled`` and ``subset_size`` (capped by the sample counts).
    """

    #: What the callback logs under ``val/`` (monitors naming them need FID); runs are ranked on the first.
    metric_names = ("val/fid", "val/kid_mean", "val/kid_std")

    def __init__(
        self,
        fid: dict | None = None,
        kid: dict | None = None,
        num_samples: int = 10_000,
        max_real: int = 10_000,
        batch_size: int = 64,
        cache_dir: str | None = None,
        every_n_epochs: int = 1,
        seed: int = 1234,
    ):
        if num_samples < 2 or max_real < 2:
            raise ConfigError("metrics.num_samples and metrics.max_real must be >= 2 for FID")
        fid, kid = dict(fid or {}), dict(kid or {})
        self.weights_path = find_inception_weights(
            fid.get("weights_path"), download=fid.get("download", True)
        )
        self.num_samples, self.max_real, self.batch_size = num_samples, max_real, batch_size
        self.use_kid = kid.get("enabled", True)
        self.kid_subset_size = kid.get("subset_size", 1000)
        self.cache = (
            RealStatisticsCache(cache_dir, self.weights_path, max_real)
            if cache_dir and self.weights_path
            else None
        )
        self.every_n_epochs, self.seed = every_n_epochs, seed
        self.fid: FastFID | None = None
        self.kid: KID | None = None
        self._real_key: str | None = None  # whose real statistics the metrics hold (complete)
        self._eval_key: str | None = None  # the split being evaluated now
        self._cacheable = False  # whether _eval_key names a datamodule's split (cached on disk)
        self._real_seen = 0

    @property
    def available(self) -> bool:
        return self.weights_path is not None

    # ---- lifecycle ----
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.fid is None:
            features = InceptionFeatures(self.weights_path)
            self.fid = FastFID(feature=features)
            if self.use_kid:
                self.kid = KID(feature=features, subset_size=self.kid_subset_size)
        for metric in self._metrics():
            metric.to(pl_module.device)

    def _metrics(self) -> list[RealStatistics]:
        return [m for m in (self.fid, self.kid) if m is not None]

    def _active(self, trainer: pl.Trainer) -> bool:
        """Every ``every_n_epochs`` epochs, at the last epoch, and always outside ``fit``."""
        if trainer.sanity_checking:
            return False
        epoch = trainer.current_epoch + 1
        return trainer.state.fn != "fit" or epoch % self.every_n_epochs == 0 or epoch == trainer.max_epochs

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not self._active(trainer):
            return
        dm, split = trainer.datamodule, eval_prefix(pl_module)
        self._cacheable = dm is not None
        self._eval_key = dm.split_id(split) if dm is not None else split
        if self._real_key == self._eval_key:
            return
        # Another split (or dataset): drop the held real statistics, then load or recompute them.
        for metric in self._metrics():
            metric.reset_real()
        self._real_seen = 0
        if self._load_cache(trainer):
            self._real_key = self._eval_key

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if not self._active(trainer) or self._real_key == self._eval_key:
            return
        real = batch[0] if isinstance(batch, (list, tuple)) else batch
        share = self.max_real // trainer.world_size + (
            trainer.global_rank < self.max_real % trainer.world_size
        )
        real = real[: max(share - self._real_seen, 0)]
        if len(real):
            self._update(to_uint8(real), real=True)
            self._real_seen += len(real)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self._active(trainer):
            return
        if self._real_key != self._eval_key:
            self._save_cache(trainer)
            self._real_key = self._eval_key
        # Batch b of the samples has its own seed and rank b % world draws it: the same images
        # whatever the number of processes (a rank may draw none: the metrics compute all the same).
        num_batches = -(-self.num_samples // self.batch_size)
        for b in range(trainer.global_rank, num_batches, trainer.world_size):
            size = min(self.batch_size, self.num_samples - b * self.batch_size)
            generator = torch.Generator().manual_seed(self.seed + 1_000_003 * trainer.current_epoch + b)
            self._update(to_uint8(pl_module.sample(size, generator=generator)), real=False)
        prefix = eval_prefix(pl_module)
        pl_module.log(f"{prefix}/fid", self.fid.compute().float(), sync_dist=False, rank_zero_only=False)
        if self.kid is not None:
            kid_mean, kid_std = self.kid.compute()
            pl_module.log_dict({f"{prefix}/kid_mean": kid_mean.float(), f"{prefix}/kid_std": kid_std.float()})
        for metric in self._metrics():
            metric.reset()  # keeps the real statistics
            metric.inception.forget()

    # trainer.test: the same, logged as test/fid, test/kid_*
    on_test_epoch_start = on_validation_epoch_start
    on_test_batch_end = on_validation_batch_end
    on_test_epoch_end = on_validation_epoch_end

    def _update(self, images: torch.Tensor, real: bool) -> None:
        for metric in self._metrics():
            metric.update(images, real=real)

    # ---- real-statistics cache ----
    def _save_cache(self, trainer: pl.Trainer) -> None:
        if self.cache is None or not self._cacheable:
            return
        stats = {key: value for metric in self._metrics() for key, value in metric.real_statistics().items()}
        if trainer.is_global_zero:
            self.cache.save(self._eval_key, stats)

    def _load_cache(self, trainer: pl.Trainer) -> bool:
        if self.cache is None or not self._cacheable:
            return False
        stats = self.cache.load(self._eval_key, [key for m in self._metrics() for key in m.REAL_STATES])
        if stats is None:
            return False
        for metric in self._metrics():
            metric.load_real_statistics(stats, trainer.global_rank, trainer.world_size)
        return True
