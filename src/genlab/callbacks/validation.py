"""``trainer.val_check_interval=N`` longer than an epoch: validation every N training batches, across epochs."""

import logging
import math

import pytorch_lightning as pl

log = logging.getLogger(__name__)


class ValidateAcrossEpochs(pl.Callback):
    """An integer ``trainer.val_check_interval`` counts training batches (conf/trainer/default.yaml). Where it
    exceeds an epoch's batches (small data, many processes), Lightning refuses to start unless validation
    counts across epochs (``check_val_every_n_epoch=None``, its own advice): that is set here, and said."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        interval = trainer.val_check_interval
        if stage != "fit" or not isinstance(interval, int) or trainer.check_val_every_n_epoch is None:
            return
        batches = epoch_batches(trainer)
        if batches is not None and interval > batches:
            trainer.check_val_every_n_epoch = None
            log.info(
                "trainer.val_check_interval=%d exceeds an epoch's %d training batches: validating every %d "
                "batches across epochs (trainer.check_val_every_n_epoch=null).",
                interval,
                batches,
                interval,
            )


def epoch_batches(trainer: pl.Trainer) -> int | None:
    """About how many training batches each process reads per epoch (after ``limit_train_batches``); None when
    the loader has no length (streamed data) or there is no datamodule."""
    datamodule = trainer.datamodule
    try:
        batches = math.ceil(len(datamodule.train_dataloader()) / trainer.world_size)
    except (AttributeError, TypeError, NotImplementedError):
        return None
    limit = trainer.limit_train_batches
    return min(batches, limit) if isinstance(limit, int) else int(batches * limit)
