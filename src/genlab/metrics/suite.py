"""The image metrics a run reports, on one Inception pass per image: FID, and as configured KID, the
Inception Score, precision/recall, density/coverage, FID's bootstrap spread and FID extrapolated to
infinitely many samples. Real-image statistics export to, and load from, one ``.npz`` file whose ``mu`` /
``sigma`` are pytorch-fid's and clean-fid's layout (``features`` adds what KID and precision/recall need).
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from genlab.errors import ConfigError
from genlab.metrics.fid import FastFID
from genlab.metrics.inception import InceptionFeatures
from genlab.metrics.intra_fid import IntraClassFID
from genlab.metrics.isc import InceptionScore
from genlab.metrics.kid import KID
from genlab.metrics.prdc import PrecisionRecall
from genlab.metrics.real_stats import RealStatistics
from genlab.utils.files import atomic_write, load_numpy

log = logging.getLogger(__name__)


@dataclass
class MetricOptions:
    """Which metrics, and their settings (``metrics.*`` of the run config)."""

    kid: bool = True
    kid_subset_size: int = 1000
    isc: bool = False
    isc_splits: int = 10
    prc: bool = False
    prc_k: int = 3
    density_coverage: bool = False
    density_coverage_k: int = 5
    bootstrap: int = 0  # resamplings of the generated features for FID's spread (0: none)
    fid_infinity: bool = False
    intra_fid: bool = False  # class-conditional models: FID per class, averaged
    seed: int = 0  # of the bootstrap and FID-infinity subsets

    @classmethod
    def from_config(
        cls, fid: dict, kid: dict, isc: dict, prc: dict, density_coverage: dict, intra_fid: dict | None = None
    ) -> "MetricOptions":
        return cls(
            kid=kid.get("enabled", True),
            kid_subset_size=kid.get("subset_size", 1000),
            isc=isc.get("enabled", False),
            isc_splits=isc.get("splits", 10),
            prc=prc.get("enabled", False),
            prc_k=prc.get("k", 3),
            density_coverage=density_coverage.get("enabled", False),
            density_coverage_k=density_coverage.get("k", 5),
            bootstrap=fid.get("bootstrap", 0),
            fid_infinity=fid.get("infinity", False),
            intra_fid=(intra_fid or {}).get("enabled", False),
        )


@dataclass
class ImageMetricSuite:
    """FID plus the metrics :class:`MetricOptions` enables, sharing one :class:`InceptionFeatures`."""

    weights_path: str | Path
    options: MetricOptions = field(default_factory=MetricOptions)

    def __post_init__(self):
        opts = self.options
        self.extractor = InceptionFeatures(self.weights_path)
        self.fid = FastFID(
            feature=self.extractor, keep_fake_features=bool(opts.bootstrap or opts.fid_infinity)
        )
        self.kid = KID(feature=self.extractor, subset_size=opts.kid_subset_size) if opts.kid else None
        if opts.isc and not self.extractor.has_classifier:
            log.warning(
                "Inception Score skipped: the classifier layer of %s is all zeros (an FID-only file; IS would be "
                "1.0 for any images). Give the full weights (torch-fidelity's %s) with metrics.fid.weights_path.",
                Path(self.weights_path).name,
                "weights-inception-2015-12-05-6726825d.pth",
            )
            opts.isc = False
        self.isc = InceptionScore(self.extractor, splits=opts.isc_splits) if opts.isc else None
        self.prdc = (
            PrecisionRecall(
                self.extractor, opts.prc, opts.density_coverage, opts.prc_k, opts.density_coverage_k
            )
            if opts.prc or opts.density_coverage
            else None
        )
        self.intra_fid = IntraClassFID(self.extractor) if opts.intra_fid else None
        self.reference: Path | None = None  # the statistics file the real statistics came from, if any

    @property
    def metrics(self) -> list:
        return [m for m in (self.fid, self.kid, self.isc, self.prdc, self.intra_fid) if m is not None]

    @property
    def real_metrics(self) -> list[RealStatistics]:
        return [m for m in self.metrics if isinstance(m, RealStatistics)]

    @property
    def real_keys(self) -> set[str]:
        return {key for metric in self.real_metrics for key in metric.REAL_STATES}

    def to(self, device: torch.device | str) -> "ImageMetricSuite":
        for metric in self.metrics:
            metric.to(device)
        return self

    def update(self, images: Tensor, real: bool, labels: Tensor | None = None) -> None:
        """Adds uint8 (N, 3, H, W) images to every metric (one Inception pass); intra-class FID takes the
        images' class ``labels`` (none: it skips them)."""
        for metric in self.metrics:
            if metric is not self.intra_fid:
                metric.update(images, real=real)
            elif labels is not None:
                metric.update(images, labels, real=real)

    def compute(self) -> dict[str, Tensor]:
        """Every enabled metric: ``fid``, ``kid_mean``/``kid_std``, ``is_mean``/``is_std``, ``precision``,
        ``recall``, ``density``, ``coverage``, ``fid_std`` (bootstrap), ``fid_inf``, and ``fid_samples``."""
        fid = self.fid.compute()
        out = {"fid": fid, "fid_samples": torch.tensor(self.fid.counts[1])}
        if self.kid is not None:
            out["kid_mean"], out["kid_std"] = self.kid.compute()
        if self.isc is not None:
            out["is_mean"], out["is_std"] = self.isc.compute()
        if self.prdc is not None:
            out.update(self.prdc.compute())
        if self.options.bootstrap:
            out["fid_std"] = self.fid.bootstrap(self.options.bootstrap, self.options.seed)
        if self.options.fid_infinity:
            out["fid_inf"] = self.fid.infinity(seed=self.options.seed)
        if self.intra_fid is not None and self.intra_fid.update_called:  # not with unlabelled images only
            out.update(self.intra_fid.compute())
        return {key: value.float() for key, value in out.items()}

    def reset(self) -> None:
        """Drops the generated images' states (the real statistics stay)."""
        for metric in self.metrics:
            metric.reset()
        self.extractor.forget()

    def reset_real(self) -> None:
        for metric in self.metrics:
            metric.reset_real() if isinstance(metric, RealStatistics) else metric.reset()
        self.reference = None

    def real_statistics(self) -> dict[str, Tensor]:
        """The real states of every metric, reduced over ranks (a collective: call it on every rank)."""
        return {key: value for metric in self.real_metrics for key, value in metric.real_statistics().items()}

    def load_real_statistics(self, stats: dict[str, Tensor], rank: int = 0, world_size: int = 1) -> None:
        for metric in self.real_metrics:
            metric.load_real_statistics(stats, rank, world_size)

    def protocol(self) -> dict[str, Any]:
        """How the last :meth:`compute` was measured (sample counts, neighbourhoods, splits)."""
        opts = self.options
        real, samples = self.fid.counts
        out = {"fid": {"samples": samples, "real_images": real, "features": "inception-v3-compat pool3 2048"}}
        if self.reference:
            out["fid"]["reference"] = str(self.reference)
        if opts.bootstrap:
            out["fid"]["bootstrap_resamples"] = opts.bootstrap
        if self.kid is not None:
            out["kid"] = {"samples": samples, "subset_size": min(opts.kid_subset_size, samples, real)}
        if self.isc is not None:
            out["inception_score"] = {
                "samples": samples,
                "splits": opts.isc_splits,
                "logits": "logits_unbiased",
            }
        if self.prdc is not None and opts.prc:
            out["precision_recall"] = {"samples": samples, "real_images": real, "k": opts.prc_k}
        if self.prdc is not None and opts.density_coverage:
            out["density_coverage"] = {"samples": samples, "real_images": real, "k": opts.density_coverage_k}
        if self.intra_fid is not None and self.intra_fid.counts:
            out["intra_fid"] = {"real_images_and_samples_per_class": self.intra_fid.counts}
        return out

    # ---- reference statistics files ----
    def save_reference(self, path: str | Path, source: str) -> None:
        """Writes the real statistics to ``path`` (.npz): ``mu``, ``sigma`` (pytorch-fid / clean-fid),
        ``features`` where KID or precision/recall hold them, the image count and where they came from."""
        stats = self.real_statistics()
        mu, sigma, n = self.fid.real_moments()
        arrays = {"mu": mu.cpu().numpy(), "sigma": sigma.cpu().numpy(), "num_images": np.array(n)}
        if "features" in stats:
            arrays["features"] = stats["features"].float().numpy()
        arrays["source"] = np.array(source)
        atomic_write(Path(path), lambda f: np.savez(f, **arrays))

    def load_reference(self, path: str | Path) -> None:
        """Real statistics from a :meth:`save_reference` file or any ``mu``/``sigma`` .npz; metrics that need
        features the file lacks are turned off, with one line saying so."""
        path = Path(path)
        if not path.is_file() or path.suffix.lower() != ".npz":
            raise ConfigError(
                f"reference={path} is not an .npz file: give a statistics .npz (mu, sigma[, features])."
            )
        with load_numpy(path, "FID statistics") as data:
            if not {"mu", "sigma"} <= set(data.files):
                raise ConfigError(
                    f"{path} holds {data.files}, not FID statistics: it needs 'mu' and 'sigma'."
                )
            mu, sigma = torch.from_numpy(data["mu"]), torch.from_numpy(data["sigma"])
            n = int(data["num_images"]) if "num_images" in data.files else 2  # FID needs the moments only
            features = torch.from_numpy(data["features"]) if "features" in data.files else None
        if mu.shape != (self.extractor.num_features,) or sigma.shape != (len(mu), len(mu)):
            raise ConfigError(
                f"{path}: mu {tuple(mu.shape)} / sigma {tuple(sigma.shape)} are not statistics of the 2048-d "
                "Inception pool features."
            )
        self.reset_real()
        if features is None and (self.kid or self.prdc):
            log.warning(
                "%s holds mu/sigma only: KID and precision/recall need real features; FID only.", path
            )
            self.kid = self.prdc = None
        self.fid.load_moments(mu, sigma, n)
        for metric in (self.kid, self.prdc):
            if metric is not None:
                metric.load_real_statistics({"features": features})
        self.reference = path
