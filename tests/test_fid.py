"""The framework's FID/KID agree with torch-fidelity on the same images; real statistics are cached
per split (test metrics compare with the test images)."""

import pytest
import pytorch_lightning as pl
import torch

from genlab.callbacks.image_metrics import ImageMetrics
from genlab.data.images import MNISTDataModule
from genlab.metrics.inception import find_inception_weights, to_uint8
from tests.fixed_images import FixedSamples, RealImages, torch_fidelity_metrics

N = 40


@pytest.fixture(scope="module")
def image_sets(mnist_root):
    dm = MNISTDataModule(root=str(mnist_root), resolution=32, channels=1)
    dm.setup()
    test = torch.stack([dm.test_set[i] for i in range(2 * N)])
    return test[:N], test[N:]


def metrics_trainer(weights, cache_dir) -> tuple[pl.Trainer, ImageMetrics]:
    callback = ImageMetrics(
        fid={"weights_path": str(weights)},
        kid={"subset_size": N},
        num_samples=N,
        max_real=N,
        cache_dir=str(cache_dir),
    )
    trainer = pl.Trainer(accelerator="cpu", logger=False, callbacks=[callback], enable_progress_bar=False)
    return trainer, callback


def validate(real, fake, weights, cache_dir):
    trainer, callback = metrics_trainer(weights, cache_dir)
    (metrics,) = trainer.validate(FixedSamples(fake), datamodule=RealImages(real), verbose=False)
    return metrics, callback


def test_fid_and_kid_match_torch_fidelity_and_cache_real_stats(image_sets, fid_weights, tmp_path):
    real, fake = image_sets
    ours, first = validate(real, fake, fid_weights, tmp_path)
    assert first._real_seen == N
    assert list(tmp_path.glob("mnist-test-slice-real40-*.pt")), "real statistics cached on disk"

    reference = torch_fidelity_metrics(real, fake, fid_weights, kid_subsets=1, kid_subset_size=N)
    fid_ref = reference["frechet_inception_distance"]
    assert fid_ref > 10.0, "two different image sets"
    assert abs(ours["val/fid"] - fid_ref) / fid_ref < 1e-3
    kid_ref = reference["kernel_inception_distance_mean"]
    assert abs(ours["val/kid_mean"] - kid_ref) <= 1e-3 * abs(kid_ref) + 1e-6

    again, second = validate(real, fake, fid_weights, tmp_path)
    assert second._real_seen == 0, "second evaluation embeds generated images only"
    assert again["val/fid"] == pytest.approx(ours["val/fid"], rel=1e-6)


def test_fid_of_identical_sets_is_near_zero(image_sets, fid_weights, tmp_path):
    real, _ = image_sets
    metrics, _ = validate(real, real, fid_weights, tmp_path)
    assert abs(metrics["val/fid"]) < 1e-2


def test_test_metrics_use_the_test_images_not_the_validation_statistics(image_sets, fid_weights, tmp_path):
    real, fake = image_sets  # val images: real; test images: the samples themselves
    trainer, callback = metrics_trainer(fid_weights, tmp_path)
    model, dm = FixedSamples(fake), RealImages(real, test_images=fake)
    (val,) = trainer.validate(model, datamodule=dm, verbose=False)
    (test,) = trainer.test(model, datamodule=dm, verbose=False)
    assert val["val/fid"] > 10.0 and abs(test["test/fid"]) < 1e-2, "test real statistics recomputed"
    assert callback._real_seen == N and len(list(tmp_path.glob("mnist-test-slice*.pt"))) == 2
    (again,) = trainer.validate(model, datamodule=dm, verbose=False)
    assert callback._real_seen == 0, "validation statistics reloaded from the cache"
    assert again["val/fid"] == pytest.approx(val["val/fid"], rel=1e-6)


def test_uint8_conversion_rounds():
    x = torch.tensor([-1.0, 1.0, 0.0, 2 * 100.6 / 255 - 1]).view(1, 1, 2, 2)
    assert to_uint8(x).view(-1, 4)[0].tolist() == [0, 255, 128, 101]


def test_weights_lookup(tmp_path, monkeypatch, fid_weights):
    monkeypatch.setenv("GENLAB_FID_WEIGHTS", str(fid_weights))
    assert find_inception_weights(None, download=False) == fid_weights
    with pytest.raises(FileNotFoundError, match="metrics.fid.weights_path points to"):
        find_inception_weights(str(tmp_path / "missing.pth"), download=False)
    monkeypatch.delenv("GENLAB_FID_WEIGHTS")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert find_inception_weights(None, download=False) is None


@pytest.mark.parametrize("n", [10, 200])  # fewer samples than dimensions (singular covariances), and more
def test_symmetric_sqrt_fid_equals_torchmetrics_formula(n):
    from torchmetrics.image.fid import _compute_fid

    from genlab.metrics.fid import frechet_distance, psd_sqrt

    g = torch.Generator().manual_seed(n)
    real = torch.randn(n, 64, generator=g, dtype=torch.float64) @ torch.randn(64, 64, generator=g).double()
    fake = torch.randn(n, 64, generator=g, dtype=torch.float64) * 1.5 + 0.3
    (mu_r, cov_r), (mu_f, cov_f) = ((x.mean(0), torch.cov(x.T)) for x in (real, fake))
    ours = frechet_distance(mu_r, psd_sqrt(cov_r), cov_r.trace(), mu_f, cov_f)
    assert float(ours) == pytest.approx(float(_compute_fid(mu_r, cov_r, mu_f, cov_f)), rel=1e-7)


# ---- the metrics' own real statistics, on a tiny stand-in extractor (no Inception pass) ----
class TinyFeatures(torch.nn.Module):
    """uint8 images -> 8 fixed random projections: cheap features for the metric-state tests."""

    num_features = 8

    def __init__(self):
        super().__init__()
        self.register_buffer("proj", torch.randn(48, 8, generator=torch.Generator().manual_seed(0)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1).float() @ self.proj / 255


def tiny_metrics():
    from genlab.metrics.fid import FastFID
    from genlab.metrics.kid import KID

    features = TinyFeatures()
    return FastFID(feature=features), KID(feature=features, subsets=3, subset_size=1000)


def tiny_images(seed: int, n: int = 10, shift: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(shift, 200 + shift, (n, 3, 4, 4), generator=g, dtype=torch.uint8)


def tiny_values(fid, kid) -> tuple[float, float]:
    return float(fid.compute()), float(kid.compute()[0])


def test_real_statistics_reload_into_a_fresh_metric_and_reset_real(tmp_path):
    from genlab.metrics.real_stats import RealStatisticsCache

    real, fake = tiny_images(1), tiny_images(2, shift=40)
    fid, kid = tiny_metrics()
    for metric in (fid, kid):
        metric.update(real[:6], real=True)
        metric.update(real[6:], real=True)
        metric.update(fake, real=False)
    expected = tiny_values(fid, kid)
    assert expected[0] > 0 and expected[1] > 0

    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"not really weights")
    cache = RealStatisticsCache(tmp_path / "cache", weights, max_real=10)
    cache.save("split-a", {**fid.real_statistics(), **kid.real_statistics()})
    assert cache.load("split-b", ["n"]) is None and cache.load("split-a", ["n", "other"]) is None
    stats = cache.load("split-a", [*fid.REAL_STATES, *kid.REAL_STATES])
    assert not list(cache.folder.glob(".*.tmp")), "no temporary file left behind"

    fresh_fid, fresh_kid = tiny_metrics()
    for metric in (fresh_fid, fresh_kid):
        metric.load_real_statistics(stats)
        metric.update(fake, real=False)
    assert tiny_values(fresh_fid, fresh_kid) == pytest.approx(expected, rel=1e-6)

    for metric in (fid, kid):
        metric.reset()  # keeps the real statistics
    assert int(fid.real_features_num_samples) == 10 and sum(map(len, kid.real_features)) == 10
    fid.reset_real()
    kid.reset_real()
    assert int(fid.real_features_num_samples) == 0 and kid.real_features == []


def _ddp_worker(rank: int, folder: str) -> None:
    """Rank 0 embeds 6 real images in two batches and all generated ones; rank 1 embeds 4 real images and
    draws no generated batch. Then the same with the real statistics reloaded, sharded, from rank 0's export."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=2)
    try:
        real, fake = tiny_images(1), tiny_images(2, shift=40)
        fid, kid = tiny_metrics()
        for metric in (fid, kid):
            for batch in (real[:3], real[3:6]) if rank == 0 else (real[6:],):
                metric.update(batch, real=True)
        stats = {**fid.real_statistics(), **kid.real_statistics()}
        reloaded = tiny_metrics()
        for metric in reloaded:
            metric.load_real_statistics(stats, rank, world_size=2)
        for metric in (fid, kid, *reloaded):
            if rank == 0:
                metric.update(fake, real=False)
        torch.save(
            {"stats": stats, "values": [tiny_values(fid, kid), tiny_values(*reloaded)]}, f"{folder}/{rank}.pt"
        )
    finally:
        dist.destroy_process_group()


def test_metrics_under_ddp_with_a_rank_that_drew_no_samples(tmp_path):
    import torch.multiprocessing as mp

    real, fake = tiny_images(1), tiny_images(2, shift=40)
    fid, kid = tiny_metrics()
    for metric in (fid, kid):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    single = tiny_values(fid, kid)
    mp.spawn(_ddp_worker, args=(str(tmp_path),), nprocs=2)
    for rank in (0, 1):
        out = torch.load(tmp_path / f"{rank}.pt", weights_only=True)
        assert int(out["stats"]["n"]) == 10 and out["stats"]["features"].shape == (10, 8)
        for values in out["values"]:
            assert values == pytest.approx(single, rel=1e-5), f"rank {rank}"
