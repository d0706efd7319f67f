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
