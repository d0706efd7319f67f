"""Cost of one FID/KID evaluation of N generated images against N real ones, three ways, same images:

(a) genlab, real statistics cached on disk: only the generated images are embedded;
(b) genlab, cold cache: the real statistics are computed (and cached) too;
(c) torch-fidelity's standalone ``calculate_metrics`` (no cache), the reference genlab must match;
and the full suite (FID + KID + Inception Score + precision/recall) both ways, cold cache: genlab's
one Inception pass per image vs torch-fidelity's ``calculate_metrics(fid, kid, isc, prc)`` on the
Inception network (the FID weights with a seeded classifier layer, so IS is computed, not refused).

genlab runs as in training: its ImageMetrics callback in ``trainer.validate`` (see tests/test_fid.py).
Real images: MNIST test images (32 px); "generated": the next N test images plus fixed Gaussian noise.
Every timing includes building the Inception network and FID's 2048x2048 matrix square root, a
fixed cost that dominates at small N: torch-fidelity and torchmetrics take general (non-symmetric)
eigenvalues of S_r S_f, genlab symmetric eigendecompositions (timed alone without --quick).

    python bench/eval_cost.py            # N=100 images per side
    python bench/eval_cost.py --quick    # N=16 (CI)

Data and weights from $GENLAB_SHARED (default ../shared): data/MNIST, weights/fid_inception_v3_2015_12_05.pth.
Writes bench/results/eval_cost[_quick].json; prints the ratios (b)/(a) and (c)/(b) last.
"""

import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from _common import ROOT, SHARED
from _results import bench_parser, report

from genlab.callbacks.image_metrics import ImageMetrics
from genlab.data.images import MNISTDataModule
from genlab.metrics.fid import frechet_distance, psd_sqrt
from genlab.metrics.inception import InceptionFeatures, to_uint8

sys.path.insert(0, str(ROOT))
from tests.fixed_images import FixedSamples, RealImages, torch_fidelity_metrics  # noqa: E402

WEIGHTS = SHARED / "weights" / "fid_inception_v3_2015_12_05.pth"


SUITE = {"isc": {"enabled": True}, "prc": {"enabled": True}}  # what torch-fidelity computes too


def genlab_eval(
    real: torch.Tensor, fake: torch.Tensor, cache_dir: Path, batch: int, weights: Path = WEIGHTS, **metrics
) -> tuple[float, dict, int]:
    """(seconds, metrics, real images embedded) of one ImageMetrics evaluation (``metrics``: more of them)."""
    start = time.perf_counter()
    callback = ImageMetrics(
        **metrics,
        fid={"weights_path": str(weights), "download": False},
        kid={"subset_size": len(fake)},
        num_samples=len(fake),
        max_real=len(real),
        batch_size=batch,
        cache_dir=str(cache_dir),
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    (metrics,) = trainer.validate(
        FixedSamples(fake), datamodule=RealImages(real, batch, name="mnist-test-bench"), verbose=False
    )
    return time.perf_counter() - start, metrics, callback._real_seen


def fidelity_eval(
    real: torch.Tensor, fake: torch.Tensor, batch: int, weights: Path = WEIGHTS, **metrics
) -> tuple[float, dict]:
    start = time.perf_counter()
    metrics = torch_fidelity_metrics(
        real, fake, weights, batch_size=batch, kid_subset_size=len(fake), **metrics
    )
    return time.perf_counter() - start, metrics


def seeded_classifier_weights(folder: Path) -> Path:
    """The FID weights with their all-zero classifier layer filled with seeded values (IS is defined)."""
    state = torch.load(WEIGHTS, weights_only=True)
    generator = torch.Generator().manual_seed(0)
    state["fc.weight"] = torch.randn(state["fc.weight"].shape, generator=generator) * 0.5
    state["fc.bias"] = torch.randn(state["fc.bias"].shape, generator=generator) * 0.1
    torch.save(state, folder / "inception_seeded_classifier.pth")
    return folder / "inception_seeded_classifier.pth"


def full_suite(real: torch.Tensor, fake: torch.Tensor, batch: int, rounds: int) -> dict:
    """FID + KID + IS + precision/recall, cold cache: genlab vs torch-fidelity, best of ``rounds``."""
    reference = {
        "isc": True,
        "prc": True,
        "feature_extractor": "inception-v3-compat",
        "feature_layer_prc": "2048",
    }
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as folder:
        weights = seeded_classifier_weights(Path(folder))
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as cache_dir:
                ours.append(genlab_eval(real, fake, Path(cache_dir), batch, weights, **SUITE)[:2])
            theirs.append(fidelity_eval(real, fake, batch, weights, **reference))
    (our_s, metrics), (ref_s, ref) = min(ours, key=lambda r: r[0]), min(theirs, key=lambda r: r[0])
    pairs = {"is_mean": "inception_score_mean", "precision": "precision", "recall": "recall"}
    return {
        "genlab_seconds": round(our_s, 3),
        "torch_fidelity_seconds": round(ref_s, 3),
        "ratio_torch_fidelity_over_genlab": round(ref_s / our_s, 3),
        **{f"{k}_genlab": round(metrics[f"val/{k}"], 5) for k in pairs},
        **{f"{k}_torch_fidelity": round(ref[v], 5) for k, v in pairs.items()},
    }


def matrix_sqrt_seconds() -> dict[str, float]:
    """FID's fixed cost on 2048-d features: torchmetrics' general eigenvalues of S_r S_f vs genlab's
    symmetric path (sqrt(S_r) once per real set, then the eigenvalues of sqrt(S_r) S_f sqrt(S_r))."""
    a = torch.randn(2048, 4096, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sigma_r, sigma_f = a[:, :2048] @ a[:, :2048].T, a[:, 2048:] @ a[:, 2048:].T
    times = {}
    start = time.perf_counter()
    torch.linalg.eigvals(sigma_r @ sigma_f)
    times["torchmetrics_eigvals"] = time.perf_counter() - start
    start = time.perf_counter()
    sqrt_r = psd_sqrt(sigma_r)
    times["genlab_real_sqrt"] = time.perf_counter() - start
    start = time.perf_counter()
    frechet_distance(a[:, 0], sqrt_r, sigma_r.trace(), a[:, 1], sigma_f)
    times["genlab_per_evaluation"] = time.perf_counter() - start
    return {k: round(v, 3) for k, v in times.items()}


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--batch", type=int, default=64, help="Inception batch size (metrics.batch_size)")
    args = parser.parse_args()
    n = 16 if args.quick else 100
    for message in (
        ".*does not have many workers.*",
        ".*will save all extracted features.*",
        ".*worker processes.*",
    ):
        warnings.filterwarnings("ignore", message=message)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)

    dm = MNISTDataModule(root=str(SHARED / "data"), resolution=32, channels=1)
    dm.setup()
    images = torch.stack([dm.test_set[i] for i in range(2 * n)])
    noise = torch.randn(images[n:].shape, generator=torch.Generator().manual_seed(0))
    real, fake = images[:n], (images[n:] + 0.3 * noise).clamp(-1, 1)
    InceptionFeatures(WEIGHTS)(to_uint8(real[:2]))  # warm-up: weights file read, CPU kernels

    cold_times, cached_times, ref_times = [], [], []
    for _ in range(1 if args.quick else 2):  # alternating rounds, best of each: this machine is noisy
        with tempfile.TemporaryDirectory() as cache_dir:
            cold_s, cold, cold_real = genlab_eval(real, fake, Path(cache_dir), args.batch)
            cached_s, cached, cached_real = genlab_eval(real, fake, Path(cache_dir), args.batch)
        ref_s, ref = fidelity_eval(real, fake, args.batch)
        cold_times.append(cold_s)
        cached_times.append(cached_s)
        ref_times.append(ref_s)
    cold_s, cached_s, ref_s = min(cold_times), min(cached_times), min(ref_times)
    sqrt_s = None if args.quick else matrix_sqrt_seconds()
    suite = (
        None if args.quick else full_suite(real, fake, args.batch, rounds=2)
    )  # parity: tests/test_eval_suite.py

    fid, fid_ref = cold["val/fid"], ref["frechet_inception_distance"]
    kid, kid_ref = cold["val/kid_mean"], ref["kernel_inception_distance_mean"]
    fid_rel = abs(fid - fid_ref) / abs(fid_ref)
    result = {
        "images_per_side": n,
        "batch": args.batch,
        "genlab_cached_seconds": round(cached_s, 3),
        "genlab_recompute_seconds": round(cold_s, 3),
        "torch_fidelity_seconds": round(ref_s, 3),
        "fid_matrix_sqrt_seconds": sqrt_s,  # FID's fixed cost, timed alone (not in --quick)
        "real_embedded": {"cached": cached_real, "recompute": cold_real},
        "ratio_recompute_over_cached": round(cold_s / cached_s, 3),
        "ratio_torch_fidelity_over_genlab_recompute": round(ref_s / cold_s, 3),
        "fid_genlab": round(fid, 4),
        "fid_genlab_cached": round(cached["val/fid"], 4),
        "fid_torch_fidelity": round(fid_ref, 4),
        "fid_rel_diff": float(f"{fid_rel:.2e}"),
        "fid_agree_1e-3": fid_rel < 1e-3,
        "kid_genlab": float(f"{kid:.6g}"),
        "kid_torch_fidelity": float(f"{kid_ref:.6g}"),
        "full_suite": suite,  # FID + KID + IS + precision/recall, cold cache, both sides (not in --quick)
        "device": "cpu",
        "threads": torch.get_num_threads(),
    }
    report(
        "eval_cost",
        args.quick,
        result,
        f"FID {fid:.3f} (torch-fidelity {fid_ref:.3f}, agree: {result['fid_agree_1e-3']}); "
        f"recompute/cached time {result['ratio_recompute_over_cached']:.2f}, "
        f"torch-fidelity/genlab recompute time {result['ratio_torch_fidelity_over_genlab_recompute']:.2f}"
        + (
            f"; full suite (FID+KID+IS+PRC) torch-fidelity/genlab time {suite['ratio_torch_fidelity_over_genlab']:.2f}"
            if suite
            else ""
        ),
    )


if __name__ == "__main__":
    main()
