"""FID with a symmetric matrix square root: the same distance as torchmetrics, at a fraction of the cost.

Tr sqrt(S_r S_f) = Tr sqrt(A S_f A) with A = S_r^(1/2), and A S_f A is symmetric positive
semi-definite, so two symmetric eigendecompositions (``eigh``) replace torchmetrics' general
``eigvals`` of a 2048x2048 matrix. A depends on the real images only: it is computed once and
reused while the real statistics stay (kept by ``reset()``, dropped by ``reset_real()``).
"""

import numpy as np
import torch
from torch import Tensor
from torchmetrics.image.fid import FrechetInceptionDistance

from genlab.errors import ConfigError
from genlab.metrics.real_stats import GatheredFeatures, RealStatistics


def psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a positive semi-definite matrix (tiny negative eigenvalues -> 0)."""
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    return (eigenvectors * eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T


def frechet_distance(
    mu_real: torch.Tensor, sqrt_sigma_real: torch.Tensor, trace_real: torch.Tensor, mu_fake, sigma_fake
) -> torch.Tensor:
    """||mu_r - mu_f||^2 + Tr(S_r) + Tr(S_f) - 2 Tr sqrt(A S_f A), A = S_r^(1/2)."""
    cross = torch.linalg.eigvalsh(sqrt_sigma_real @ sigma_fake @ sqrt_sigma_real).clamp(min=0).sqrt().sum()
    return (mu_real - mu_fake).square().sum() + trace_real + sigma_fake.trace() - 2 * cross


class FastFID(RealStatistics, GatheredFeatures, FrechetInceptionDistance):
    """torchmetrics' FID (same states, updates and DDP reduction) with :func:`frechet_distance`.

    Real statistics survive ``reset()`` unless ``reset_real_features=True``; see :class:`RealStatistics`.
    With ``keep_fake_features`` the generated features are kept too, for :meth:`bootstrap` (spread of FID
    over resampled sample sets) and :meth:`infinity` (FID extrapolated to infinitely many samples).
    """

    REAL_STATES = {
        "sum": "real_features_sum",
        "cov_sum": "real_features_cov_sum",
        "n": "real_features_num_samples",
    }

    LIST_STATES = {"fake_features": 2048}

    def __init__(self, *args, reset_real_features: bool = False, keep_fake_features: bool = False, **kwargs):
        super().__init__(*args, reset_real_features=reset_real_features, **kwargs)
        self.orig_dtype = torch.float32  # update() sets the features' dtype; a rank that drew none keeps this
        self._real_cache: tuple | None = None  # (key of the real statistics, mean, sqrt(cov), trace(cov))
        self.counts = (0, 0)  # (real, generated) images of the last compute(), over all ranks
        self.LIST_STATES = {"fake_features": len(self.real_features_sum)} if keep_fake_features else {}
        if keep_fake_features:
            self.add_state("fake_features", [], dist_reduce_fx="cat")

    def update(self, imgs: Tensor, real: bool) -> None:
        super().update(imgs, real)
        if not real and self.LIST_STATES:
            self.fake_features.append(self.inception(imgs).double())

    def load_moments(self, mu: Tensor, sigma: Tensor, n: int, rank: int = 0) -> None:
        """Real statistics from a mean and covariance (pytorch-fid's ``mu``/``sigma``) of ``n`` images."""
        mu, sigma = mu.double().to(self.device), sigma.double().to(self.device)
        states = {"sum": mu * n, "cov_sum": sigma * (n - 1) + n * torch.outer(mu, mu), "n": torch.tensor(n)}
        self.load_real_statistics(states, rank)

    @staticmethod
    def _moments(total: torch.Tensor, cov_sum: torch.Tensor, n: torch.Tensor) -> tuple:
        mean = (total / n).unsqueeze(0)
        cov = (cov_sum - n * mean.t().mm(mean)) / (n - 1)
        return mean.squeeze(0), cov

    def compute(self) -> torch.Tensor:
        n_real, n_fake = self.real_features_num_samples, self.fake_features_num_samples
        self.counts = (int(n_real), int(n_fake))  # of the last compute(), over all ranks
        if n_real < 2 or n_fake < 2:
            raise ConfigError(
                f"FID needs at least two real and two generated images, got {int(n_real)} real and {int(n_fake)} "
                "generated: raise metrics.num_samples, or hold out more real images (data.val_fraction)."
            )
        mu_fake, sigma_fake = self._moments(self.fake_features_sum, self.fake_features_cov_sum, n_fake)
        return frechet_distance(*self._real(), mu_fake, sigma_fake).to(self.orig_dtype)

    def real_moments(self) -> tuple[Tensor, Tensor, int]:
        """(mean, covariance, count) of the real features, e.g. for pytorch-fid's ``mu``/``sigma`` file."""
        n = self.real_features_num_samples
        return *self._moments(self.real_features_sum, self.real_features_cov_sum, n), int(n)

    def _real(self) -> tuple[Tensor, Tensor, Tensor]:
        key = (int(self.real_features_num_samples), float(self.real_features_sum.sum()))
        if self._real_cache is None or self._real_cache[0] != key:
            mean, cov, _ = self.real_moments()
            self._real_cache = (key, mean, psd_sqrt(cov), cov.trace())
        return self._real_cache[1:]

    def _fid_of(self, fake: Tensor) -> float:
        return fid_to_features(*self._real(), fake)

    def bootstrap(self, resamples: int, seed: int = 0) -> Tensor:
        """Standard deviation of FID over ``resamples`` resamplings (with replacement) of the generated
        features: the spread due to the finite sample set."""
        fake = self.features("fake_features").cpu()
        rng = np.random.RandomState(seed)
        values = [self._fid_of(fake[rng.randint(0, len(fake), len(fake))]) for _ in range(resamples)]
        return torch.tensor(values, dtype=torch.float64).std()

    def infinity(self, points: int = 15, seed: int = 0) -> Tensor:
        """FID extrapolated to infinitely many samples (Chong & Forsyth 2020): FID of ``points`` sample
        counts from N/10 to N (random subsets) fitted linearly in 1/count; the intercept."""
        fake = self.features("fake_features").cpu()
        fake = fake[np.random.RandomState(seed).permutation(len(fake))]
        counts = np.linspace(max(len(fake) // 10, 2), len(fake), points).astype(int)
        fids = [self._fid_of(fake[:count]) for count in counts]
        slope, intercept = np.polyfit(1.0 / counts, fids, 1)
        return torch.tensor(intercept, dtype=torch.float64)


def fid_to_features(mu_real: Tensor, sqrt_real: Tensor, trace_real: Tensor, fake: Tensor) -> float:
    """FID of generated features (n, d) against real statistics (mean, sqrt(cov), trace(cov)). With n <= d
    (bootstraps, per-class and CPU sample counts) Tr sqrt(A S_f A) comes from the n x n Gram matrix of the
    centred features times A: (XA)^T (XA) and (XA)(XA)^T share their nonzero eigenvalues."""
    n, mean = len(fake), fake.mean(dim=0)
    if n > len(mean):
        return float(frechet_distance(mu_real, sqrt_real, trace_real, mean, torch.cov(fake.T)))
    centred = fake - mean
    projected = centred @ sqrt_real
    cross = torch.linalg.eigvalsh(projected @ projected.T / (n - 1)).clamp(min=0).sqrt().sum()
    trace_fake = centred.square().sum() / (n - 1)
    return float((mu_real - mean).square().sum() + trace_real + trace_fake - 2 * cross)
