"""Real-image statistics that FID/KID metrics own: export them, reload them DDP-sharded, drop them; their
on-disk cache."""

import functools
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat, dim_zero_sum

from genlab.utils.files import atomic_save


class RealStatistics(Metric):
    """Mixin for an Inception metric (``update(images, real)``) whose real-image states outlive ``reset()``.

    ``REAL_STATES`` maps the cache keys to the metric's real states (``add_state`` names); a state is
    either summed (``dist_reduce_fx="sum"``) or a list of feature tensors that DDP gathers.
    """

    REAL_STATES: ClassVar[dict[str, str]]

    def real_statistics(self) -> dict[str, Tensor]:
        """The real states reduced over all ranks, on the CPU (a collective: call it on every rank)."""
        with self.sync_context(should_unsync=True):
            states = {key: getattr(self, name) for key, name in self.REAL_STATES.items()}
            return {key: _tensor(value).detach().cpu().clone() for key, value in states.items()}

    def load_real_statistics(self, stats: dict[str, Tensor], rank: int = 0, world_size: int = 1) -> None:
        """Loads :meth:`real_statistics` as this rank's share: summed states on rank 0 only (zeros elsewhere,
        so the DDP sum counts them once), gathered features split in contiguous, order-keeping shares."""
        for key, name in self.REAL_STATES.items():
            default, value = self._defaults[name], stats[key].to(self.device)
            if isinstance(default, list):
                setattr(self, name, [value.tensor_split(world_size)[rank]])
            elif self._reductions[name] is dim_zero_sum:
                value = value if rank == 0 else torch.zeros_like(value)
                setattr(self, name, value.to(default.dtype))
            else:
                raise NotImplementedError(f"{type(self).__name__}.{name}: no sharding for its reduction")
        self._computed = None

    def reset_real(self) -> None:
        """``reset()``, the real statistics included (``reset()`` keeps them)."""
        self.reset()
        for name in self.REAL_STATES.values():
            default = self._defaults[name]
            setattr(self, name, [] if isinstance(default, list) else default.clone().to(self.device))


class GatheredFeatures(Metric):
    """Mixin for metrics whose states are lists of (n, d) feature tensors (``LIST_STATES``: name -> d) that
    DDP gathers: ``features(name)`` concatenates them; ``sync`` gathers one tensor per rank and list, empty
    where a rank drew none (DDP gathers lists element by element, so their lengths must agree)."""

    LIST_STATES: ClassVar[dict[str, int]]

    def features(self, name: str) -> Tensor:
        value = getattr(self, name)
        if isinstance(value, Tensor):  # synced over DDP ranks: the gathered tensor
            return value
        return dim_zero_cat(value) if value else torch.empty(0, self.LIST_STATES[name], device=self.device)

    def sync(self, *args, **kwargs) -> None:
        if not self._is_synced:
            for name in self.LIST_STATES:
                setattr(self, name, [self.features(name)])
        super().sync(*args, **kwargs)


def _tensor(state: Tensor | list[Tensor]) -> Tensor:
    return dim_zero_cat(state) if isinstance(state, list) else state


class RealStatisticsCache:
    """:meth:`RealStatistics.real_statistics` on disk, one file per split (``datamodule.split_id``), number
    of real images (``max_real``) and Inception weights."""

    def __init__(self, folder: str | Path, weights_path: str | Path, max_real: int):
        self.folder, self.weights_path, self.max_real = Path(folder), Path(weights_path), max_real

    @functools.cached_property
    def weights_digest(self) -> str:
        with open(self.weights_path, "rb") as f:
            return hashlib.sha256(f.read(1 << 20)).hexdigest()[:8]

    def path(self, split_id: str) -> Path:
        return self.folder / f"{split_id}-real{self.max_real}-inception2048-{self.weights_digest}.pt"

    def load(self, split_id: str, keys: Iterable[str]) -> dict[str, Tensor] | None:
        """The statistics cached for ``split_id``; None when there are none or they lack one of ``keys``."""
        path = self.path(split_id)
        if not path.is_file():
            return None
        stats = torch.load(path, map_location="cpu", weights_only=True)
        return stats if set(keys) <= stats.keys() else None

    def save(self, split_id: str, stats: dict[str, Tensor]) -> None:
        """Writes ``stats`` atomically (call it on one rank)."""
        atomic_save({key: value.cpu() for key, value in stats.items()}, self.path(split_id))
