"""Fixed-noise sample grids at each validation: a PNG in the run dir and an image in every logger."""

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image

from genlab.interfaces import Reconstructor
from genlab.models import GenerativeModel


class SampleGrid(pl.Callback):
    """Saves ``<dirpath>/epoch_XXX.png`` of ``num_samples`` images from an :class:`ImageGenerator`'s ``sample``.

    The noise is drawn from a generator re-seeded with ``seed`` every time, so successive grids
    show the same latents and the progress of training is visible. A :class:`Reconstructor`
    (autoencoders) also gets ``recon_epoch_XXX.png``: rows of inputs over their reconstructions.
    """

    def __init__(
        self, dirpath: str, num_samples: int = 64, nrow: int = 8, seed: int = 0, every_n_epochs: int = 1
    ):
        self.dirpath = Path(dirpath)
        self.num_samples, self.nrow, self.seed, self.every_n_epochs = num_samples, nrow, seed, every_n_epochs
        self._inputs: torch.Tensor | None = None

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if batch_idx == 0 and isinstance(pl_module, Reconstructor):
            self._inputs = GenerativeModel.inputs(batch)[: self.num_samples // 2]

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        epoch = trainer.current_epoch
        images = pl_module.sample(self.num_samples, generator=torch.Generator().manual_seed(self.seed))
        self._save(trainer, images, "val/samples", f"epoch_{epoch:03d}.png")
        if self._inputs is not None:
            inputs, recons = self._inputs, pl_module.reconstruct(self._inputs)
            rows = [torch.cat([a, b]) for a, b in zip(inputs.split(self.nrow), recons.split(self.nrow))]
            self._save(trainer, torch.cat(rows), "val/reconstructions", f"recon_epoch_{epoch:03d}.png")

    def _save(self, trainer: pl.Trainer, images: torch.Tensor, key: str, filename: str) -> None:
        grid = make_grid(images.float().cpu(), nrow=self.nrow, normalize=True, value_range=(-1, 1))
        self.dirpath.mkdir(parents=True, exist_ok=True)
        save_image(grid, self.dirpath / filename)
        log_image(trainer, key, grid)


def log_image(trainer: pl.Trainer, key: str, grid: torch.Tensor) -> None:
    """Sends a (3, H, W) [0, 1] image to every logger that takes images."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, grid, trainer.global_step)
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[grid])
