"""LightningModules: how each model family is trained and sampled."""

import pytorch_lightning as pl


def eval_prefix(module: pl.LightningModule) -> str:
    """``test`` inside ``trainer.test``, else ``val``: evaluation metrics are namespaced by stage."""
    return "test" if module.trainer.testing else "val"
