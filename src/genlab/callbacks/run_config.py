"""Stores the run's resolved config in every checkpoint, so eval/sampling need no options repeated."""

from typing import Any

import pytorch_lightning as pl

from genlab.checkpoints import CONFIG_KEY


class StoreConfig(pl.Callback):
    def __init__(self, config: dict[str, Any]):
        self.config = config  # plain containers only: loadable with torch.load(weights_only=True)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = self.config
