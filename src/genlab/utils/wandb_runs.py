"""W&B run organisation: the runs of one Hydra multirun share a group and are named by what they sweep; a run
resumed from a checkpoint continues the W&B run that wrote it."""

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.loggers import WandbLogger

MAX_TAG_LENGTH = 64  # W&B rejects longer tags


def swept_keys(hydra_cfg: DictConfig) -> set[str]:
    """Keys the multirun varies: sweeper params plus command-line sweeps (``a=1,2``, ``choice(...)``)."""
    keys = set((hydra_cfg.sweeper.get("params") or {}).keys())
    multirun = Path(hydra_cfg.sweep.dir) / "multirun.yaml"  # the launcher's copy of the command line
    if multirun.is_file():
        overrides = OverridesParser.create().parse_overrides(OmegaConf.load(multirun).hydra.overrides.task)
        keys |= {o.get_key_element() for o in overrides if o.is_sweep_override()}
    return {key.lstrip("+~") for key in keys}


def organise_wandb_runs(cfg: DictConfig) -> None:
    """In a multirun, fill ``logger.wandb`` group (the sweep dir's name), name and tags (the swept values).

    Values set explicitly in the config are kept; single runs are left as configured.
    """
    node = (cfg.get("logger") or {}).get("wandb")
    if not node or not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    hydra_cfg = HydraConfig.get()
    sweep_dir = Path(hydra_cfg.sweep.dir)
    keys = swept_keys(hydra_cfg)
    swept = [o for o in hydra_cfg.overrides.task if o.split("=", 1)[0].lstrip("+~") in keys]
    with open_dict(node):
        node.group = node.get("group") or f"{sweep_dir.parent.name}_{sweep_dir.name}"
        node.name = node.get("name") or ",".join(swept) or f"job{hydra_cfg.job.num}"
        node.tags = [*(node.get("tags") or []), *(o[:MAX_TAG_LENGTH] for o in swept)]


RUN_ID_KEY = "wandb_run_id"  # checkpoint key of the W&B run that trained it


class WandbRunId(pl.Callback):
    """Stores the W&B run's id in every checkpoint, so that resuming from it continues that run."""

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger.version:
                checkpoint[RUN_ID_KEY] = logger.version


def continue_logged_run(cfg: DictConfig, checkpoint: dict[str, Any]) -> None:
    """Resuming from ``checkpoint``: ``logger.wandb`` continues its W&B run (same id, W&B's ``resume="allow"``;
    an ``id`` set in the config wins) and ``logger.csv`` appends to its ``metrics.csv``; the logged steps go on
    from the checkpoint's (TensorBoard's event files simply gain a new file)."""
    loggers = cfg.get("logger") or {}
    run_id = checkpoint.get(RUN_ID_KEY)
    with open_dict(cfg):
        if (node := loggers.get("wandb")) and run_id and not node.get("id"):
            node.id, node.resume = run_id, "allow"
        if (node := loggers.get("csv")) and "append" in node:
            node.append = True
