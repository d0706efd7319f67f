"""Instantiate Hydra config groups whose members are dicts of ``_target_`` nodes."""

from hydra.utils import instantiate
from omegaconf import DictConfig


def instantiate_group(group: DictConfig | None) -> list:
    """Every ``_target_`` entry of a group such as ``callbacks`` or ``logger`` (null entries skipped)."""
    if not group:
        return []
    return [instantiate(node, _convert_="all") for node in group.values() if node and "_target_" in node]
