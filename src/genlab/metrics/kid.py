"""KID on torchmetrics' KernelInceptionDistance, with real statistics it owns and a DDP-safe gather."""

import warnings

import torch
from torch import Tensor, nn
from torchmetrics.image.kid import KernelInceptionDistance

from genlab.metrics.real_stats import GatheredFeatures, RealStatistics


class KID(RealStatistics, GatheredFeatures, KernelInceptionDistance):
    """torchmetrics' KID whose ``subset_size`` is capped by the real and generated counts, and whose subsets are
    drawn from a fixed seed (as torch-fidelity's ``rng_seed``): the same features give the same KID on every
    rank and in every run, and computing it leaves the training's random stream untouched.

    ``feature`` is a feature size or a module with ``num_features``. Real features survive ``reset()``
    unless ``reset_real_features=True``; see :class:`RealStatistics`.
    """

    SUBSET_SEED = 2020  # torch-fidelity's default
    REAL_STATES = {"features": "real_features"}
    LIST_STATES = {"real_features": 2048, "fake_features": 2048}

    def __init__(self, feature: int | nn.Module = 2048, *args, reset_real_features: bool = False, **kwargs):
        # torchmetrics' notice that KID keeps every feature: the callers bound them (max_real, num_samples).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*will save all extracted features.*")
            super().__init__(feature, *args, reset_real_features=reset_real_features, **kwargs)
        self.LIST_STATES = dict.fromkeys(
            self.LIST_STATES, int(getattr(self.inception, "num_features", feature))
        )

    def compute(self) -> tuple[Tensor, Tensor]:
        requested = self.subset_size
        counts = [sum(len(f) for f in features) for features in (self.real_features, self.fake_features)]
        self.subset_size = min(requested, *counts)
        try:
            with torch.random.fork_rng(devices=[]):  # the subsets' randperm: the CPU generator
                torch.manual_seed(self.SUBSET_SEED)
                return super().compute()
        finally:
            self.subset_size = requested
