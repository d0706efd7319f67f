"""Intra-class FID (Miyato & Koyama 2018): the FID of each class's samples against the real images of that
class, averaged over the classes; a class-conditional model's FID that also sees whether each class looks
like itself. Features come from the suite's shared Inception pass; real features survive ``reset()``."""

import torch
from torch import Tensor

from genlab.metrics.fid import fid_to_features, psd_sqrt
from genlab.metrics.inception import InceptionFeatures
from genlab.metrics.real_stats import GatheredFeatures, RealStatistics

WIDTH = InceptionFeatures.num_features + 1  # the features, then the class label


class IntraClassFID(RealStatistics, GatheredFeatures):
    """``update(images, labels, real)``; ``compute()`` -> {intra_fid, intra_fid_classes} over the classes with
    at least two real and two generated images. States: (n, 2048 + 1) rows of features and label."""

    REAL_STATES = {"class_features": "real_features"}
    LIST_STATES = {"real_features": WIDTH, "fake_features": WIDTH}
    full_state_update = False

    def __init__(self, extractor: InceptionFeatures, **kwargs):
        super().__init__(**kwargs)
        self.extractor = extractor
        self.add_state("real_features", [], dist_reduce_fx="cat")
        self.add_state("fake_features", [], dist_reduce_fx="cat")
        self.counts: dict[int, tuple[int, int]] = {}  # class -> (real, generated) of the last compute()

    def reset(self) -> None:
        """Drops the generated features; the real ones stay (:meth:`reset_real` drops them too)."""
        real = list(self.real_features)  # Metric.reset() clears the list in place
        super().reset()
        self.real_features = real

    def update(self, images: Tensor, labels: Tensor, real: bool) -> None:
        features = self.extractor(images).float()
        rows = torch.cat([features, labels.to(features).reshape(-1, 1)], dim=1)
        (self.real_features if real else self.fake_features).append(rows)

    def compute(self) -> dict[str, Tensor]:
        real, fake = (self.features(name).cpu().double() for name in ("real_features", "fake_features"))
        fids, self.counts = [], {}
        if not len(fake):  # samples without labels (e.g. eval.py samples=<folder>): nothing per class
            return {}
        for label in torch.unique(fake[:, -1]).tolist():
            r, f = real[real[:, -1] == label, :-1], fake[fake[:, -1] == label, :-1]
            self.counts[int(label)] = (len(r), len(f))
            if len(r) < 2 or len(f) < 2:
                continue
            fids.append(fid_between(r, f))
        mean = sum(fids) / len(fids) if fids else float("nan")
        return {"intra_fid": torch.tensor(mean), "intra_fid_classes": torch.tensor(float(len(fids)))}


def fid_between(real: Tensor, fake: Tensor) -> float:
    """FID between two feature sets (n, d). With fewer images than dimensions on either side (a class's
    share of the samples) Tr sqrt(S_r S_f) is the nuclear norm of X_r X_f^T / sqrt((n_r - 1)(n_f - 1)), X the
    centred features: the nonzero eigenvalues of S_r S_f are its squared singular values, and no d x d
    matrix square root is needed."""
    if min(len(real), len(fake)) > real.shape[1]:
        cov = torch.cov(real.T)
        return fid_to_features(real.mean(0), psd_sqrt(cov), cov.trace(), fake)
    xr, xf = real - real.mean(0), fake - fake.mean(0)
    scale = ((len(real) - 1) * (len(fake) - 1)) ** 0.5
    cross = torch.linalg.svdvals(xr @ xf.T).sum() / scale
    mean_term = (real.mean(0) - fake.mean(0)).square().sum()
    traces = xr.square().sum() / (len(real) - 1) + xf.square().sum() / (len(fake) - 1)
    return float(mean_term + traces - 2 * cross)
