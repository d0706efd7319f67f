"""Instantiate Hydra config groups whose members are dicts of ``_target_`` nodes."""

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger


def instantiate_group(group: DictConfig | None) -> list:
    """Every ``_target_`` entry of a group such as ``callbacks`` or ``logger`` (null -> [])."""
    if not group:
        return []
    return [instantiate(node, _convert_="all") for node in group.values() if node and "_target_" in node]


def instantiate_callbacks(group: DictConfig | None) -> list[pl.Callback]:
    return instantiate_group(group)


def instantiate_loggers(group: DictConfig | None) -> list[Logger]:
    return instantiate_group(group)
