"""``val/sample_accuracy`` of a class-conditional model: how often a classifier trained on the real training
split (:mod:`genlab.metrics.classifier`, cached per split) recognises the class each sample was drawn for.
Unconditional models are left alone, so the callback can stay in every run's list."""

from pathlib import Path

import pytorch_lightning as pl
import torch

from genlab.callbacks.image_metrics import evaluation_due
from genlab.interfaces import ReportsProtocol
from genlab.metrics.classifier import SampleAccuracy, load_or_train
from genlab.models import eval_prefix, log_global
from genlab.models.conditioning import is_conditional


class SampleAccuracyCallback(pl.Callback, ReportsProtocol):
    """Every ``every_n_epochs`` validations (and at the last epoch) draws ``num_samples`` images, classes in
    turn, and logs the share the classifier labels as asked. ``classifier_steps`` (batches of 128) sizes
    its training; ``cache_dir`` keeps it between runs."""

    def __init__(
        self,
        num_samples: int = 500,
        batch_size: int = 100,
        every_n_epochs: int = 1,
        classifier_steps: int = 1000,
        cache_dir: str | None = None,
        seed: int = 4321,
    ):
        self.num_samples, self.batch_size, self.every_n_epochs = num_samples, batch_size, every_n_epochs
        self.classifier_steps, self.seed = classifier_steps, seed
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.metric: SampleAccuracy | None = None
        self._protocol: dict = {}
        self._about: dict = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.metric is not None or not is_conditional(pl_module):
            return
        dm = trainer.datamodule
        dm.setup("fit")
        key = f"{dm.split_id('train')}-steps{self.classifier_steps}"
        train_args = dict(
            train_set=dm.dataset("train"),
            val_set=dm.dataset("val"),
            channels=dm.channels,
            num_classes=pl_module.num_classes,
            steps=self.classifier_steps,
            device=pl_module.device,
        )
        if trainer.is_global_zero:  # trains (or loads) first and caches; the other ranks then load
            classifier, val_accuracy = load_or_train(self.cache_dir, key, **train_args)
        trainer.strategy.barrier()
        if not trainer.is_global_zero:
            classifier, val_accuracy = load_or_train(self.cache_dir, key, **train_args)
        self.metric = SampleAccuracy(classifier).to(pl_module.device)
        self._about = {
            "classifier_trained_on": dm.split_id("train"),
            "classifier_val_accuracy": val_accuracy,
            "classifier_checked_on": dm.split_id("val"),  # the split and its image count
        }

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.metric is None or not evaluation_due(trainer, self.every_n_epochs):
            return
        # Batch b has its own seed and classes; rank b % world draws it (the same samples on any world size).
        num_batches = -(-self.num_samples // self.batch_size)
        for b in range(trainer.global_rank, num_batches, trainer.world_size):
            start = b * self.batch_size
            labels = (
                torch.arange(start, min(start + self.batch_size, self.num_samples)) % pl_module.num_classes
            )
            generator = torch.Generator().manual_seed(self.seed + 1_000_003 * trainer.current_epoch + b)
            self.metric.update(pl_module.sample(len(labels), generator=generator, labels=labels), labels)
        split = eval_prefix(pl_module)
        log_global(pl_module, {f"{split}/sample_accuracy": self.metric.compute()})
        self.metric.reset()
        self._protocol = {f"{split}/sample_accuracy": {"num_samples": self.num_samples, **self._about}}

    on_test_epoch_end = on_validation_epoch_end

    def protocol(self) -> dict:
        return self._protocol
