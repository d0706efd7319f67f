"""Fixed-noise sample grids at each validation: a PNG in the run dir and an image in every logger."""

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image

from genlab.data.base import GenlabDataModule
from genlab.interfaces import Reconstructor
from genlab.models import GenerativeModel
from genlab.models.conditioning import is_conditional


class SampleGrid(pl.Callback):
    """Saves ``<dirpath>/epoch_XXX.png`` of ``num_samples`` images from an :class:`ImageGenerator`'s ``sample``.

    The noise is drawn from a generator re-seeded with ``seed`` every time, so successive grids
    show the same latents and the progress of training is visible. A class-conditional model draws one
    row of ``nrow`` samples per class instead (the loggers get the class names as caption). A
    :class:`Reconstructor` (autoencoders) also gets ``recon_epoch_XXX.png``: rows of inputs over their
    reconstructions.
    """

    def __init__(
        self, dirpath: str, num_samples: int = 64, nrow: int = 8, seed: int = 0, every_n_epochs: int = 1
    ):
        self.dirpath = Path(dirpath)
        self.num_samples, self.nrow, self.seed, self.every_n_epochs = num_samples, nrow, seed, every_n_epochs
        self._inputs: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if batch_idx == 0 and isinstance(pl_module, Reconstructor):
            self._inputs = GenerativeModel.inputs(batch)[: self.num_samples // 2]
            if is_conditional(pl_module):
                self._labels = pl_module.batch_labels(batch)[: self.num_samples // 2]

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        epoch, generator = trainer.current_epoch, torch.Generator().manual_seed(self.seed)
        caption = None
        if is_conditional(pl_module):  # one row per class
            labels = torch.arange(pl_module.num_classes).repeat_interleave(self.nrow)
            images = pl_module.sample(len(labels), generator=generator, labels=labels)
            caption = "rows: " + ", ".join(class_names(trainer, pl_module.num_classes))
        else:
            images = pl_module.sample(self.num_samples, generator=generator)
        self._save(trainer, images, "val/samples", f"epoch_{epoch:03d}.png", caption)
        if self._inputs is not None:
            inputs, recons = self._inputs, pl_module.reconstruct(self._inputs, self._labels)
            rows = [torch.cat([a, b]) for a, b in zip(inputs.split(self.nrow), recons.split(self.nrow))]
            self._save(trainer, torch.cat(rows), "val/reconstructions", f"recon_epoch_{epoch:03d}.png")

    def _save(
        self, trainer: pl.Trainer, images: torch.Tensor, key: str, filename: str, caption: str | None = None
    ) -> None:
        grid = make_grid(images.float().cpu(), nrow=self.nrow, normalize=True, value_range=(-1, 1))
        self.dirpath.mkdir(parents=True, exist_ok=True)
        save_image(grid, self.dirpath / filename)
        log_image(trainer, key, grid, caption)


def class_names(trainer: pl.Trainer, num_classes: int) -> list[str]:
    """The datamodule's names of the classes (their labels where it declares none)."""
    datamodule = trainer.datamodule
    names = datamodule.class_names if isinstance(datamodule, GenlabDataModule) else None
    return list(names) if names and len(names) == num_classes else [str(c) for c in range(num_classes)]


def log_image(trainer: pl.Trainer, key: str, grid: torch.Tensor, caption: str | None = None) -> None:
    """Sends a (3, H, W) [0, 1] image to every logger that takes images (W&B with ``caption``)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, grid, trainer.global_step)
        elif isinstance(logger, MLFlowLogger):
            pixels = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
            logger.experiment.log_image(logger.run_id, pixels, f"{key}/step_{trainer.global_step:07d}.png")
        elif isinstance(logger, WandbLogger):
            logger.log_image(
                key=key,
                images=[grid],
                step=trainer.global_step,
                **({"caption": [caption]} if caption else {}),
            )
