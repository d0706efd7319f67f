"""Stores the run's resolved config in every checkpoint, so eval/sampling need no options repeated, and the
overrides it was composed from, so ``train.py ckpt_path=<run>`` resumes it without them retyped."""

from typing import Any

import pytorch_lightning as pl

from genlab.checkpoints import CONFIG_KEY, OVERRIDES_KEY


class StoreConfig(pl.Callback):
    def __init__(self, config: dict[str, Any], overrides: list[str] | None = None):
        self.config = config  # plain containers only: loadable with torch.load(weights_only=True)
        self.overrides = overrides

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = self.config
        if self.overrides is not None:
            checkpoint[OVERRIDES_KEY] = self.overrides
