"""Fidelity and diversity apart, on Inception pool features of real and generated images.

- Precision and recall (Kynkaenniemi et al. 2019) as torch-fidelity computes them: a sample lies on a
  manifold when it is within (<=) the distance from some point of that manifold to its k-th nearest
  neighbour (k = 3), float32 distances.
- Density and coverage (Naeem et al. 2020) as the ``prdc`` package computes them: strict (<) k-NN
  balls (k = 5) around the real samples, float64 distances.

The real k-NN radii depend on the real features only: computed once and kept while they stay.
"""

import torch
from torch import Tensor

from genlab.errors import ConfigError
from genlab.metrics.inception import InceptionFeatures
from genlab.metrics.real_stats import GatheredFeatures, RealStatistics

BLOCK = 2048  # rows of a distance block: memory stays O(BLOCK x n) however many images


def kth_neighbour_distances(features: Tensor, k: int) -> Tensor:
    """Distance of each row to its k-th nearest other row (the row itself is the 0th)."""
    return torch.cat(
        [torch.cdist(block, features).kthvalue(k + 1, dim=1).values for block in features.split(BLOCK)]
    )


def balls_holding(points: Tensor, centres: Tensor, radii: Tensor, strict: bool = False) -> Tensor:
    """How many balls (``centres``, ``radii``) hold each point (``<=``, or ``<`` when ``strict``)."""
    counts = []
    for block in points.split(BLOCK):
        distances = torch.cdist(block, centres)
        counts.append((distances < radii if strict else distances <= radii).sum(dim=1))
    return torch.cat(counts)


def nearest_distances(points: Tensor, others: Tensor) -> Tensor:
    return torch.cat([torch.cdist(block, others).min(dim=1).values for block in points.split(BLOCK)])


class PrecisionRecall(RealStatistics, GatheredFeatures):
    """``compute()`` -> {precision, recall} (k = ``k_pr``) and, with ``density_coverage``, {density,
    coverage} (k = ``k_dc``). Real features survive ``reset()`` (see :class:`RealStatistics`)."""

    REAL_STATES = {"features": "real_features"}
    LIST_STATES = {
        "real_features": InceptionFeatures.num_features,
        "fake_features": InceptionFeatures.num_features,
    }
    full_state_update = False

    def __init__(
        self,
        extractor: InceptionFeatures,
        precision_recall: bool = True,
        density_coverage: bool = True,
        k_pr: int = 3,
        k_dc: int = 5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.extractor, self.k_pr, self.k_dc = extractor, k_pr, k_dc
        self.precision_recall, self.density_coverage = precision_recall, density_coverage
        self.add_state("real_features", [], dist_reduce_fx="cat")
        self.add_state("fake_features", [], dist_reduce_fx="cat")
        self._real_radii: tuple | None = None  # (key of the real features, radii for k_pr, radii for k_dc)

    def reset(self) -> None:
        """Drops the generated features; the real ones stay (:meth:`reset_real` drops them too)."""
        real = list(self.real_features)  # Metric.reset() clears the list in place
        super().reset()
        self.real_features = real

    def update(self, images: Tensor, real: bool) -> None:
        (self.real_features if real else self.fake_features).append(self.extractor(images))

    def _radii(self, real: Tensor) -> tuple[Tensor | None, Tensor | None]:
        key = (len(real), float(real.sum()))
        if self._real_radii is None or self._real_radii[0] != key:
            pr = kth_neighbour_distances(real, self.k_pr) if self.precision_recall else None
            dc = kth_neighbour_distances(real.double(), self.k_dc) if self.density_coverage else None
            self._real_radii = (key, pr, dc)
        return self._real_radii[1:]

    def compute(self) -> dict[str, Tensor]:
        real, fake = self.features("real_features").cpu(), self.features("fake_features").cpu()
        k = max(self.k_pr * self.precision_recall, self.k_dc * self.density_coverage)
        if min(len(real), len(fake)) <= k:
            raise ConfigError(
                f"precision/recall and density/coverage need more than k={k} real and generated images, got "
                f"{len(real)} and {len(fake)}: raise metrics.num_samples / metrics.max_real, or lower k."
            )
        real_pr, real_dc = self._radii(real)
        out = {}
        if self.precision_recall:
            out["precision"] = (balls_holding(fake, real, real_pr) > 0).double().mean()
            fake_pr = kth_neighbour_distances(fake, self.k_pr)
            out["recall"] = (balls_holding(real, fake, fake_pr) > 0).double().mean()
        if self.density_coverage:
            real, fake = real.double(), fake.double()
            out["density"] = balls_holding(fake, real, real_dc, strict=True).double().mean() / self.k_dc
            out["coverage"] = (nearest_distances(real, fake) < real_dc).double().mean()
        return out
