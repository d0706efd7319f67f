"""FID with a symmetric matrix square root: the same distance as torchmetrics, at a fraction of the cost.

Tr sqrt(S_r S_f) = Tr sqrt(A S_f A) with A = S_r^(1/2), and A S_f A is symmetric positive
semi-definite, so two symmetric eigendecompositions (``eigh``) replace torchmetrics' general
``eigvals`` of a 2048x2048 matrix. A depends on the real images only: it is computed once and
reused while the real statistics stay (kept by ``reset()``, dropped by ``reset_real()``).
"""

import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from genlab.errors import ConfigError
from genlab.metrics.real_stats import RealStatistics


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


class FastFID(RealStatistics, FrechetInceptionDistance):
    """torchmetrics' FID (same states, updates and DDP reduction) with :func:`frechet_distance`.

    Real statistics survive ``reset()`` unless ``reset_real_features=True``; see :class:`RealStatistics`.
    """

    REAL_STATES = {
        "sum": "real_features_sum",
        "cov_sum": "real_features_cov_sum",
        "n": "real_features_num_samples",
    }

    def __init__(self, *args, reset_real_features: bool = False, **kwargs):
        super().__init__(*args, reset_real_features=reset_real_features, **kwargs)
        self.orig_dtype = torch.float32  # update() sets the features' dtype; a rank that drew none keeps this
        self._real_cache: tuple | None = None  # (key of the real statistics, mean, sqrt(cov), trace(cov))

    @staticmethod
    def _moments(total: torch.Tensor, cov_sum: torch.Tensor, n: torch.Tensor) -> tuple:
        mean = (total / n).unsqueeze(0)
        cov = (cov_sum - n * mean.t().mm(mean)) / (n - 1)
        return mean.squeeze(0), cov

    def compute(self) -> torch.Tensor:
        n_real, n_fake = self.real_features_num_samples, self.fake_features_num_samples
        if n_real < 2 or n_fake < 2:
            raise ConfigError(
                f"FID needs at least two real and two generated images, got {int(n_real)} real and {int(n_fake)} "
                "generated: raise metrics.num_samples, or hold out more real images (data.val_fraction)."
            )
        key = (int(n_real), float(self.real_features_sum.sum()))
        if self._real_cache is None or self._real_cache[0] != key:
            mean, cov = self._moments(self.real_features_sum, self.real_features_cov_sum, n_real)
            self._real_cache = (key, mean, psd_sqrt(cov), cov.trace())
        _, mu_real, sqrt_real, trace_real = self._real_cache
        mu_fake, sigma_fake = self._moments(self.fake_features_sum, self.fake_features_cov_sum, n_fake)
        return frechet_distance(mu_real, sqrt_real, trace_real, mu_fake, sigma_fake).to(self.orig_dtype)
