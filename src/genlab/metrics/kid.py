"""KID on torchmetrics' KernelInceptionDistance, with real statistics it owns and a DDP-safe gather."""

import torch
from torch import Tensor, nn
from torchmetrics.image.kid import KernelInceptionDistance
from torchmetrics.utilities.data import dim_zero_cat

from genlab.metrics.real_stats import RealStatistics


class KID(RealStatistics, KernelInceptionDistance):
    """torchmetrics' KID whose ``subset_size`` is capped by the real and generated counts.

    ``feature`` is a feature size or a module with ``num_features``. Real features survive ``reset()``
    unless ``reset_real_features=True``; see :class:`RealStatistics`.
    """

    REAL_STATES = {"features": "real_features"}

    def __init__(self, feature: int | nn.Module = 2048, *args, reset_real_features: bool = False, **kwargs):
        super().__init__(feature, *args, reset_real_features=reset_real_features, **kwargs)
        self.num_features = int(getattr(self.inception, "num_features", feature))

    def _features(self, name: str) -> Tensor:
        features = getattr(self, name)
        return dim_zero_cat(features) if features else torch.empty(0, self.num_features, device=self.device)

    def sync(self, *args, **kwargs) -> None:
        """Gathers one (n, d) tensor per rank and list, empty where a rank has none (fewer sample batches
        than ranks): DDP gathers the lists element by element, so their lengths must agree across ranks."""
        if not self._is_synced:
            for name in ("real_features", "fake_features"):
                setattr(self, name, [self._features(name)])
        super().sync(*args, **kwargs)

    def compute(self) -> tuple[Tensor, Tensor]:
        requested = self.subset_size
        counts = [sum(len(f) for f in features) for features in (self.real_features, self.fake_features)]
        self.subset_size = min(requested, *counts)
        try:
            return super().compute()
        finally:
            self.subset_size = requested
