"""LightningModules: how each model family is trained and sampled."""

from typing import ClassVar

import pytorch_lightning as pl


class GenerativeModel(pl.LightningModule):
    """What the pipeline needs to know about a model family, declared by the family (never probed)."""

    #: What the model trains on and generates: "image" or "text" (a datamodule of the same modality).
    modality: ClassVar[str] = "image"
    #: Checkpoint selection when FID/KID are unavailable (no Inception weights); None: keep the last epoch.
    fallback_metric: ClassVar[str | None] = None
    #: True when some backward passes leave parameters without gradients (the GAN's D step never reaches
    #: G): DDP must then search the autograd graph for unused parameters on every step, which costs time.
    ddp_find_unused_parameters: ClassVar[bool] = False


def eval_prefix(module: pl.LightningModule) -> str:
    """``test`` inside ``trainer.test``, else ``val``: evaluation metrics are namespaced by stage."""
    return "test" if module.trainer.testing else "val"
