"""The evaluation suite: IS, precision/recall and density/coverage equal their references (torch-fidelity,
prdc) on one Inception pass per image; samples from anywhere and reference statistics files; error bars."""

import json
import logging
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.metrics.fid import FastFID, frechet_distance
from genlab.metrics.inception import to_uint8
from genlab.metrics.intra_fid import IntraClassFID
from genlab.metrics.suite import ImageMetricSuite, MetricOptions
from genlab.models import GenerativeModel
from genlab.pipeline import evaluate, load_run, train
from tests.conftest import compose_train, quick_run
from tests.fixed_images import UInt8Set

N = 40
EVERY = MetricOptions(kid_subset_size=N, isc=True, prc=True, density_coverage=True)


@pytest.fixture(scope="module")
def image_sets(mnist_root):
    from genlab.data.images import MNISTDataModule

    dm = MNISTDataModule(root=str(mnist_root), resolution=32, channels=1)
    dm.setup()
    test = torch.stack([dm.test_set[i] for i in range(2 * N)])
    fake = to_uint8(test[N:]).clone()
    fake[: N // 2] = 255 - fake[: N // 2]  # half off the real manifold: precision and coverage below 1
    return to_uint8(test[:N]), fake


@pytest.fixture(scope="module")
def classifier_weights(fid_weights, tmp_path_factory):
    """The FID weights with their all-zero classifier layer filled with seeded random values: logits that
    differ per image, read by genlab and torch-fidelity alike."""
    state = torch.load(fid_weights, weights_only=True)
    generator = torch.Generator().manual_seed(0)
    state["fc.weight"] = torch.randn(state["fc.weight"].shape, generator=generator) * 0.5
    state["fc.bias"] = torch.randn(state["fc.bias"].shape, generator=generator) * 0.1
    path = tmp_path_factory.mktemp("weights") / "inception_seeded_classifier.pth"
    torch.save(state, path)
    return path


def test_every_metric_equals_its_reference_on_one_inception_pass(image_sets, classifier_weights):
    import prdc
    import torch_fidelity

    real, fake = image_sets
    suite = ImageMetricSuite(classifier_weights, EVERY)
    for images, is_real in ((real[:16], True), (real[16:], True), (fake[:16], False), (fake[16:], False)):
        suite.update(images, real=is_real)
    ours = {k: float(v) for k, v in suite.compute().items()}
    assert suite.extractor.passes == 4, "FID, KID, IS, precision/recall, density/coverage: one pass per batch"
    suite.reset()  # the next evaluation: every metric keeps the real statistics
    suite.update(fake, real=False)
    assert {k: float(v) for k, v in suite.compute().items()} == pytest.approx(ours, rel=1e-6, abs=1e-6)

    reference = torch_fidelity.calculate_metrics(
        input1=UInt8Set(fake.float() / 127.5 - 1),
        input2=UInt8Set(real.float() / 127.5 - 1),
        cuda=False,
        fid=True,
        isc=True,
        prc=True,
        feature_extractor="inception-v3-compat",  # torch-fidelity's own default for prc is VGG16
        feature_layer_prc="2048",
        feature_extractor_weights_path=str(classifier_weights),
        cache=False,
        verbose=False,
    )
    assert reference["inception_score_mean"] > 1.2, "the seeded classifier gives logits that differ per image"
    for ours_key, ref_key in (
        ("fid", "frechet_inception_distance"),
        ("is_mean", "inception_score_mean"),
        ("is_std", "inception_score_std"),
        ("precision", "precision"),
        ("recall", "recall"),
    ):
        assert ours[ours_key] == pytest.approx(reference[ref_key], rel=1e-4), ours_key

    expected = prdc.compute_prdc(suite.extractor(real).numpy(), suite.extractor(fake).numpy(), nearest_k=5)
    assert 0 < expected["coverage"] < 1
    assert ours["density"] == pytest.approx(expected["density"], rel=1e-6)
    assert ours["coverage"] == pytest.approx(expected["coverage"], rel=1e-6)
    assert ours["fid_samples"] == N


def test_inception_score_is_refused_with_a_zero_classifier_layer(fid_weights, caplog):
    with caplog.at_level(logging.WARNING):
        suite = ImageMetricSuite(fid_weights, MetricOptions(isc=True))
    assert suite.isc is None
    (line,) = [r.getMessage() for r in caplog.records if "Inception Score" in r.getMessage()]
    assert "all zeros" in line and "weights_path" in line


class Identity(torch.nn.Module):
    num_features = 16

    def forward(self, x):
        return x


def test_fid_error_bars_and_extrapolation_to_infinite_samples():
    """Real and generated features from one Gaussian: FID at N is biased upwards; FID-infinity removes
    most of that bias, and the bootstrap spread is of the order of the value."""
    generator = torch.Generator().manual_seed(0)
    fid = FastFID(feature=Identity(), keep_fake_features=True)
    fid.update(torch.randn(20_000, 16, generator=generator, dtype=torch.float64), real=True)
    fid.update(torch.randn(400, 16, generator=generator, dtype=torch.float64), real=False)
    biased, spread, infinite = float(fid.compute()), float(fid.bootstrap(20)), float(fid.infinity())
    few = fid.features("fake_features")[:10]  # fewer samples than dimensions: the n x n Gram path
    full = frechet_distance(*fid._real(), few.mean(dim=0), torch.cov(few.T))
    assert fid._fid_of(few) == pytest.approx(float(full), rel=1e-7)
    assert fid._fid_of(fid.features("fake_features")) == pytest.approx(biased, rel=1e-6)
    assert biased > 0.2 and abs(infinite) < 0.5 * biased
    assert 0.1 * biased < spread < biased


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory, fid_weights):
    run = tmp_path_factory.mktemp("gan_run")
    metrics = [f"metrics.fid.weights_path={fid_weights}", "metrics.max_real=24", "metrics.num_samples=16"]
    metrics += ["metrics.batch_size=8", "metrics.kid.enabled=false"]
    quick = [a for a in quick_run("gan") if a != "metrics=null"]
    train(compose_train([*quick, "trainer.max_epochs=1", *metrics], run))  # on digits
    return run


def compose_eval(overrides: list[str], out):
    return compose_train(overrides, out, config_name="eval")


def test_samples_from_a_folder_or_npz_score_as_the_checkpoint_that_drew_them(gan_run, fid_weights, tmp_path):
    """eval.py samples=<folder of PNGs> on the images a checkpoint's evaluation draws gives its FID;
    an .npz of them and a reference statistics file (pytorch-fid's mu/sigma) give the same number."""
    checkpoint = evaluate(compose_eval([f"ckpt_path={gan_run}"], tmp_path / "ckpt"))  # 16 samples, 24 real

    _, state, run_cfg = load_run(str(gan_run))
    from hydra.utils import instantiate

    model = instantiate(run_cfg.model, _convert_="all")
    model.load_state_dict(state["state_dict"])
    model.eval()
    images = torch.cat([model.sample(8, generator=torch.Generator().manual_seed(1234 + b)) for b in range(2)])
    folder = tmp_path / "pngs"  # sample.py's layout: its grid beside the samples/ it wrote
    (folder / "samples").mkdir(parents=True)
    Image.new("L", (64, 64)).save(folder / "grid.png")
    pixels = to_uint8(images)[:, :1]
    for i, image in enumerate(pixels):
        Image.fromarray(image[0].numpy()).save(folder / "samples" / f"{i:03d}.png")
    np.savez(tmp_path / "samples.npz", arr_0=pixels.permute(0, 2, 3, 1).numpy())
    np.save(tmp_path / "samples.npy", pixels.numpy())  # torch's (N, C, H, W)

    common = [
        f"metrics.fid.weights_path={fid_weights}",
        "metrics.max_real=24",
        "metrics.batch_size=8",
        "image_metrics=default",
        "metrics.kid.enabled=false",
        "data=digits",
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        unlabelled = [f"samples={folder}", *common, "metrics.intra_fid.enabled=true"]
        from_folder = evaluate(compose_eval(unlabelled, tmp_path / "folder"))
    assert from_folder["val/fid"] == pytest.approx(checkpoint["val/fid"], rel=1e-5)
    assert from_folder["samples"] == str(folder / "samples") and "val/intra_fid" not in from_folder
    assert not [w for w in caught if "IntraClassFID" in str(w.message)], "no per-class FID without labels"
    assert (
        from_folder["protocol"]["fid"] | {"split": "val", "samples": 16, "real_images": 24}
        == (from_folder["protocol"]["fid"])
    )

    stats = tmp_path / "mnist_val.npz"
    evaluate(compose_eval([f"export_reference={stats}", *common], tmp_path / "export"))
    with np.load(stats) as data:
        mu_sigma = tmp_path / "mu_sigma.npz"
        np.savez(mu_sigma, mu=data["mu"], sigma=data["sigma"])  # pytorch-fid's layout, nothing else
    reference = [a for a in common if not a.startswith("data")]
    from_npz = evaluate(
        compose_eval(
            [f"samples={tmp_path / 'samples.npz'}", f"reference={mu_sigma}", *reference], tmp_path / "npz"
        )
    )
    assert from_npz["val/fid"] == pytest.approx(checkpoint["val/fid"], rel=1e-5)
    written = json.loads((tmp_path / "npz" / "metrics.json").read_text())
    assert written["protocol"]["fid"]["reference"] == str(mu_sigma)
    from_npy = evaluate(
        compose_eval(
            [f"samples={tmp_path / 'samples.npy'}", f"reference={mu_sigma}", *reference], tmp_path / "npy"
        )
    )
    assert from_npy["val/fid"] == pytest.approx(checkpoint["val/fid"], rel=1e-5)


def test_sample_arrays_read_in_any_layout_and_are_refused_with_the_fix(tmp_path):
    """An array of samples reads alike as (N, H, W), (N, H, W, C) or (N, C, H, W), .npz or .npy; floats,
    other shapes, files that are not numpy's, pickled objects and a missing path are one line each."""
    from genlab.errors import ConfigError
    from genlab.sample_eval import sample_batches

    grey = np.random.default_rng(0).integers(0, 256, (5, 7, 9), dtype=np.uint8)
    rgb = np.random.default_rng(1).integers(0, 256, (5, 7, 9, 3), dtype=np.uint8)
    layouts = {
        "grey.npz": (grey, grey),
        "grey_nhwc.npz": (grey[..., None], grey),
        "grey_nchw.npy": (grey[:, None], grey),
        "rgb_nhwc.npy": (rgb, rgb),
        "rgb_nchw.npz": (rgb.transpose(0, 3, 1, 2), rgb),
    }
    for name, (stored, pixels) in layouts.items():
        (np.save if name.endswith(".npy") else np.savez)(tmp_path / name, stored)
        read = torch.cat(list(sample_batches(tmp_path / name, 2)))
        expected = torch.from_numpy(pixels if pixels.ndim == 4 else np.repeat(pixels[..., None], 3, -1))
        assert torch.equal(read, expected.permute(0, 3, 1, 2)), name

    np.savez(tmp_path / "float.npz", images=grey / 255.0)
    np.save(tmp_path / "rgba.npy", np.zeros((2, 7, 9, 4), np.uint8))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "text.npy").write_text("not numpy")
    refusals = {
        "float.npz": "float.npz[images] is float64 (5, 7, 9) with values in [0, 1]: expected uint8 pixels 0-255; "
        "convert it first, e.g. (x * 255).round().clip(0, 255).astype(np.uint8) for images in [0, 1].",
        "rgba.npy": "rgba.npy is uint8 (2, 7, 9, 4): expected (N, H, W), (N, H, W, C) or (N, C, H, W) with C 1",
        "objects.npy": "objects.npy is not a readable .npy file of images: Object arrays cannot be loaded",
        "text.npy": "text.npy is not a numpy .npy file: write images with np.save or np.savez.",
        "missing.npz": "missing.npz does not exist: give a folder of images, an .npz or an .npy file.",
    }
    for name, message in refusals.items():
        with pytest.raises(ConfigError) as refused:
            next(sample_batches(tmp_path / name, 2))
        assert message in str(refused.value) and "\n" not in str(refused.value), name

    suite = ImageMetricSuite.__new__(ImageMetricSuite)  # the file is refused before the network is used
    for reference, message in [
        ("text.npy", "reference=" + str(tmp_path / "text.npy") + " is not an .npz file")
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            suite.load_reference(tmp_path / reference)
    (tmp_path / "text.npz").write_text("not numpy")
    with pytest.raises(
        ConfigError, match="text.npz is not a numpy .npz file: write FID statistics with np.save"
    ):
        suite.load_reference(tmp_path / "text.npz")


def test_metric_settings_typed_for_a_checkpoint_apply_to_its_metrics(gan_run, fid_weights, tmp_path):
    """eval.py ckpt_path=<run trained with FID> metrics.max_real=8, as a user types it, sets the run's metric
    (it trained with 24 real images), like +overrides.metrics.max_real=8; it was eval's own section, unused."""
    from tests.conftest import run_script

    env = {"GENLAB_FID_WEIGHTS": str(fid_weights)}
    for typed in ("metrics.max_real=8", "+overrides.metrics.max_real=8"):
        out = tmp_path / typed.lstrip("+")
        run_script("eval.py", [f"ckpt_path={gan_run}", typed, f"hydra.run.dir={out}"], tmp_path, env=env)
        protocol = json.loads((out / "metrics.json").read_text())["protocol"]["fid"]
        assert (protocol["real_images"], protocol["samples"]) == (8, 16), typed


def test_split_train_scores_samples_against_the_training_images(fid_weights, tmp_path):
    """split=train (the CIFAR-10 tables' protocol): the real statistics are the training images', in order,
    as many as metrics.max_real; the metrics and their protocol say so."""
    from hydra.utils import instantiate

    common = [f"metrics.fid.weights_path={fid_weights}", "image_metrics=default", "metrics.batch_size=32"]
    common += ["metrics.kid.enabled=false", "data=digits", "metrics.max_real=96"]
    exported = {
        split: evaluate(
            compose_eval(
                [f"export_reference={tmp_path / split}.npz", f"split={split}", *common], tmp_path / split
            )
        )
        for split in ("train", "val")
    }
    dm = instantiate(compose_eval(common, tmp_path / "data").data)  # as eval.py builds it
    sizes = {split: len(dm.dataset(split)) for split in exported}
    assert sizes["train"] > sizes["val"] > 96 and all(e["num_images"] == 96 for e in exported.values())
    assert [e["source"].split("-")[1] for e in exported.values()] == [f"{k}{n}" for k, n in sizes.items()]
    train_images = torch.cat([GenerativeModel.inputs(b) for b in dm.eval_dataloader("train")])[:32]
    np.savez(tmp_path / "real.npz", arr_0=to_uint8(train_images).permute(0, 2, 3, 1).numpy())
    scored = evaluate(
        compose_eval([f"samples={tmp_path / 'real.npz'}", "split=train", *common], tmp_path / "s")
    )
    assert set(scored) >= {"train/fid"} and not any(k.startswith("val/") for k in scored)
    assert scored["protocol"]["fid"]["split"] == "train" and scored["protocol"]["fid"]["real_images"] == 96
    with np.load(tmp_path / "train.npz") as train, np.load(tmp_path / "val.npz") as val:
        assert not np.allclose(train["mu"], val["mu"])


def test_sample_folders_of_any_mode_read_as_rgb_and_mixed_sizes_are_refused(tmp_path):
    from genlab.errors import ConfigError
    from genlab.sample_eval import sample_batches

    Image.new("RGB", (32, 32), (10, 20, 30)).save(tmp_path / "a.png")
    Image.new("L", (32, 32), 200).save(tmp_path / "b.jpg")
    Image.new("P", (32, 32)).save(tmp_path / "c.png")
    (batch,) = list(sample_batches(tmp_path, 8))
    assert batch.shape == (3, 3, 32, 32) and batch.dtype == torch.uint8
    assert batch[0, :, 0, 0].tolist() == [10, 20, 30] and batch[1, :, 0, 0].tolist() == [200, 200, 200]
    Image.new("RGBA", (40, 32)).save(tmp_path / "d.png")
    with pytest.raises(ConfigError, match="share one size: a.png is \\(32, 32\\), d.png is \\(32, 40\\)"):
        list(sample_batches(tmp_path, 2))


@pytest.mark.parametrize("per_class", [60, 10])  # more, and fewer, samples per class than feature dimensions
def test_intra_class_fid_is_the_mean_of_the_fids_of_each_class(per_class):
    generator = torch.Generator().manual_seed(0)
    shifts = torch.tensor([0.0, 1.0, 3.0])  # class c's real images ~ N(c-th shift, I); samples a bit off
    real_labels, fake_labels = torch.arange(3).repeat(400), torch.arange(3).repeat(per_class)
    real = torch.randn(1200, 16, generator=generator) + shifts[real_labels, None]
    fake = 1.2 * torch.randn(3 * per_class, 16, generator=generator) + shifts[fake_labels, None] + 0.3
    intra = IntraClassFID(Identity())
    intra.update(real, real_labels, real=True)
    intra.update(fake, fake_labels, real=False)
    expected = []
    for c in range(3):
        fid = FastFID(feature=Identity())
        fid.update(real[real_labels == c].double(), real=True)
        fid.update(fake[fake_labels == c].double(), real=False)
        expected.append(float(fid.compute()))
    out = intra.compute()
    assert float(out["intra_fid"]) == pytest.approx(sum(expected) / 3, rel=1e-4)
    assert out["intra_fid_classes"] == 3 and intra.counts == dict.fromkeys(range(3), (400, per_class))
    intra.reset()  # the samples go, the real images stay
    assert len(intra.features("real_features")) == 1200 and len(intra.features("fake_features")) == 0
