"""Class-conditional generation: diffusion with classifier-free guidance (guidance scales 0 and 1 are the
unconditional and conditional predictions), the projection GAN and the CVAE; conditional runs train on labelled
data, sample the classes asked for and log val/sample_accuracy."""

import json
import logging

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from genlab.cli import quoted_overrides
from genlab.data.images import ImageFolderDataModule
from genlab.diffusion import Guided, drop_labels
from genlab.errors import ConfigError, DataError
from genlab.nets.dcgan import Discriminator, Generator
from genlab.nets.unet import UNet
from genlab.pipeline import evaluate, sample, train
from tests.conftest import compose_train, quick_run, run_script
from tests.wandb_reader import read_run


def test_guidance_zero_is_unconditional_one_conditional_and_between_is_the_cfg_mix():
    torch.manual_seed(0)
    net = UNet(
        channels=1, resolution=8, width=8, channel_mults=(1, 2), num_res_blocks=1, dropout=0.0, num_classes=3
    )
    for p in net.head.parameters():  # the zero-initialised head would make every output 0
        torch.nn.init.normal_(p, std=0.1)
    net.eval()
    x, t, labels = torch.randn(4, 1, 8, 8), torch.tensor([0, 10, 50, 99]), torch.tensor([0, 1, 2, 1])
    cond, uncond = net(x, t, labels), net(x, t, None)
    assert not torch.allclose(cond, uncond), "the class changes the prediction"
    assert torch.equal(Guided(net, labels, 0.0)(x, t), uncond)
    assert torch.equal(Guided(net, labels, 1.0)(x, t), cond)
    torch.testing.assert_close(Guided(net, labels, 3.0)(x, t), uncond + 3.0 * (cond - uncond))
    assert torch.equal(uncond, net(x, t, torch.full_like(labels, net.null_label)))

    dropped = drop_labels(torch.zeros(10_000, dtype=torch.long), 3, 0.1, torch.Generator().manual_seed(0))
    assert abs((dropped == 3).float().mean().item() - 0.1) < 0.01


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cdiffusion")
    metrics = train(compose_train([*quick_run("diffusion+labels"), "model.sample_steps=4"], run))
    return run, metrics


def sample_cfg(run, out, args, solver=("sampler=ddim", "steps=4")):
    out.mkdir(parents=True)  # Hydra's run dir
    cfg = compose_train([f"ckpt_path={run}", "device=cpu", *solver, *args], out, "sample")
    OmegaConf.set_struct(cfg, False)
    return cfg


def test_a_conditional_diffusion_run_samples_the_classes_asked_for(conditional_run, tmp_path, caplog):
    run, metrics = conditional_run
    assert torch.isfinite(torch.tensor(metrics["val/loss"]))
    with caplog.at_level(logging.INFO, logger="genlab.pipeline"):
        out = sample(sample_cfg(run, tmp_path / "per_class", ["per_class=2", "guidance=3.0"]))
    assert (out / "labels.txt").read_text().split() == [str(c) for c in range(10) for _ in range(2)]
    assert len(list((out / "samples").glob("*.png"))) == 20 and (out / "grid.png").is_file()
    assert "Wrote 20 samples" in caplog.text, "the log counts what was written, not num_samples"
    out = sample(sample_cfg(run, tmp_path / "labels", ["labels=[3,7]", "num_samples=5"]))
    assert (out / "labels.txt").read_text().split() == ["3", "7", "3", "7", "3"]


def test_conditioning_needs_labels_and_unconditional_models_refuse_classes(tmp_path):
    cfg = compose_train([*quick_run("diffusion"), "model.num_classes=10"], tmp_path / "run")
    with pytest.raises(ConfigError, match="data.labels=true"):
        train(cfg)
    unconditional = tmp_path / "uncond"
    train(compose_train([*quick_run("diffusion"), "trainer.max_epochs=1"], unconditional))
    with pytest.raises(ConfigError, match="unconditional"):
        sample(sample_cfg(unconditional, tmp_path / "s", ["labels=[1]"]))


# ---- class-conditional GAN (SNGAN / ProjGAN recipe) and VAE (CVAE) ----
def test_conditional_batchnorm_and_projection_discriminator_use_the_class():
    torch.manual_seed(0)
    g = Generator(latent_dim=8, channels=1, resolution=8, width=8, num_classes=3).eval()
    z = torch.randn(4, 8)
    assert not torch.allclose(g(z, torch.zeros(4, dtype=torch.long)), g(z, torch.full((4,), 2)))
    unconditional = Generator(latent_dim=8, channels=1, resolution=8, width=8)
    assert "net.1.weight" in unconditional.state_dict(), "unconditional checkpoints keep their layout"

    d = Discriminator(channels=1, resolution=8, width=8, norm="spectral", num_classes=3).eval()
    x, labels = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 1])
    features = d.net[:-1](x)
    expected = d.net[-1](features).flatten() + (d.embed(labels) * features.sum((2, 3))).sum(1)
    torch.testing.assert_close(d(x, labels), expected)  # psi(phi(x)) + y^T V phi(x)
    assert not torch.allclose(d(x, labels), d(x, torch.zeros_like(labels)))


@pytest.mark.parametrize(
    "loss, extra",
    [
        ("hinge", ["model.discriminator.norm=spectral", "model.n_critic=2"]),
        ("wgan_gp", ["model.discriminator.norm=none"]),
        ("non_saturating", ["model.ema_decay=null"]),
    ],
)
def test_a_conditional_gan_trains_with_every_loss(loss, extra, tmp_path):
    metrics = train(compose_train([*quick_run("gan+labels"), f"model.loss={loss}", *extra], tmp_path))
    assert torch.isfinite(torch.tensor(metrics["train/d_loss"]))
    assert 0 <= metrics["val/sample_accuracy"] <= 1
    out = sample(sample_cfg(tmp_path, tmp_path / "s", ["per_class=2"], solver=()))
    assert (out / "labels.txt").read_text().split() == [str(c) for c in range(10) for _ in range(2)]


def test_a_cvae_conditions_encoder_decoder_and_likelihood_on_the_class(tmp_path):
    metrics = train(compose_train([*quick_run("vae+labels"), "model.iw_samples=4"], tmp_path))
    assert torch.isfinite(torch.tensor(metrics["val/iw_nll"])) and "val/sample_accuracy" in metrics
    protocols = json.loads((tmp_path / "metrics.json").read_text())["protocol"]
    protocol = protocols["val/iw_nll"]
    assert protocol["samples_per_image"] == 4 and protocol["split"] == "val" and protocol["images"] > 0
    classifier = protocols["val/sample_accuracy"]  # what the classifier behind it was trained and checked on
    assert classifier["classifier_checked_on"].startswith("digits-val179-")  # the split and its size
    assert classifier["classifier_trained_on"].startswith("digits-train")
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["state_dict"]["encoder.head.weight"].shape[1] == 32 * 16 + 10, (
        "4x4x32 features + one-hot class"
    )
    out = sample(sample_cfg(tmp_path, tmp_path / "s", ["labels=[4]", "num_samples=3"], solver=()))
    assert (out / "labels.txt").read_text().split() == ["4", "4", "4"]


def test_class_rows_and_captions_reach_weights_and_biases(tmp_path):
    train(compose_train([*quick_run("gan+labels"), "logger=wandb"], tmp_path))
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    grids = [row for row in read_run(run_dir)["history"] if "val/samples/captions" in row]
    assert grids and grids[-1]["val/samples/captions"] == ["rows: " + ", ".join(str(c) for c in range(10))]
    assert grids[-1]["val/samples/height"] == 10 * 34 + 2, "one row of 32 px samples per class"


# ---- guidance makes samples recognisable: a short CPU training, measured with val/sample_accuracy ----
GUIDED_DIGITS = [  # a class-conditional DDPM on 8 px digits: draws every class after ~600 steps
    "model=diffusion",
    "data=digits",
    "data.labels=true",
    "data.resolution=8",
    "model.net.width=32",
    "model.net.channel_mults=[1,2]",
    "model.net.num_res_blocks=1",
    "model.net.attention_resolutions=[]",
    "model.net.dropout=0.0",
    "model.lr=1e-3",
    "model.warmup_steps=50",
    "model.ema_decay=0.995",
    "model.sampler=dpmpp_2m",
    "model.sample_steps=20",
    "trainer=cpu",
    "trainer.max_steps=600",
    "trainer.max_epochs=-1",
    "trainer.val_check_interval=600",
    "trainer.check_val_every_n_epoch=null",
    "metrics=null",
    "optimized_metric=null",
    "callbacks.progress_bar=null",
    "callbacks.sample_accuracy.num_samples=300",
    "callbacks.sample_accuracy.classifier_steps=300",
]


@pytest.mark.long  # 2-6 min on 2 cores: CI leaves it out; the guidance maths is tested above
def test_guided_samples_are_recognised_as_the_class_asked_for(tmp_path):
    run = tmp_path / "run"
    run_script("train.py", [*GUIDED_DIGITS, f"hydra.run.dir={run}"], tmp_path)
    accuracy = {}
    for guidance in (0.0, 1.0, 3.0):  # eval.py of the checkpoint at each guidance scale, as a user would
        out = tmp_path / f"guidance_{guidance}"
        args = [f"ckpt_path={run}", f"+overrides.model.guidance={guidance}", f"hydra.run.dir={out}"]
        run_script("eval.py", args, tmp_path)
        accuracy[guidance] = json.loads((out / "metrics.json").read_text())["val/sample_accuracy"]
    assert accuracy[0.0] < 0.3, f"guidance 0 is the unconditional model: about chance, {accuracy}"
    assert accuracy[3.0] >= 0.8 and accuracy[3.0] >= accuracy[1.0] > accuracy[0.0] + 0.4, accuracy


@pytest.mark.slow
def test_intra_class_fid_of_a_conditional_run(tmp_path, fid_weights):
    args = [a for a in quick_run("gan+labels") if a != "metrics=null"]
    args += [f"metrics.fid.weights_path={fid_weights}", "metrics.num_samples=20", "metrics.max_real=64"]
    metrics = train(compose_train([*args, "metrics.intra_fid.enabled=true"], tmp_path))  # at the last epoch
    assert metrics["val/intra_fid"] > 0 and metrics["val/intra_fid_classes"] >= 8
    assert metrics["val/fid"] > 0
    counts = json.loads((tmp_path / "metrics.json").read_text())["protocol"]["intra_fid"]
    assert {int(c): n[1] for c, n in counts["real_images_and_samples_per_class"].items()} == dict.fromkeys(
        range(10), 2
    )


def test_samples_of_named_classes_by_name_or_index(tmp_path):
    """An image folder's classes are its subfolders: the checkpoint keeps their names, and sample.py
    labels=[...] takes a name or an index, as typed (anything else: one line naming the choices)."""
    for i, name in enumerate(("cat", "été")):  # Hydra reads the second only when quoted: the scripts quote it
        (tmp_path / "images" / name).mkdir(parents=True)
        for j in range(8):
            Image.new("RGB", (12, 12), (200 * i, 30 * j, 90)).save(tmp_path / "images" / name / f"{j}.png")
    data = [
        "data=image_folder",
        f"data.root={tmp_path / 'images'}",
        "data.resolution=32",
        "data.batch_size=4",
    ]
    train(compose_train([*quick_run("vae+labels"), *data], tmp_path / "run"))
    typed = quoted_overrides(["labels=[été,0]", "num_samples=3"])  # as src/sample.py reads its arguments
    out = sample(sample_cfg(tmp_path / "run", tmp_path / "s", typed, solver=()))
    assert (out / "labels.txt").read_text().split() == ["1", "0", "1"]
    one = sample(sample_cfg(tmp_path / "run", tmp_path / "one", quoted_overrides(["labels=été"]), solver=()))
    assert set((one / "labels.txt").read_text().split()) == {"1"}, "one name, without brackets"
    for label, needle in [
        ("cow", r"'cow' is not a class of this model: .* class name \(cat, été\)"),
        (2, r"2 is not"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            sample(sample_cfg(tmp_path / "run", tmp_path / f"bad{label}", [f"labels=[{label}]"], solver=()))
    # trained on with a folder of some of its classes: labelled by name, as the model learned them
    (tmp_path / "more" / "été").mkdir(parents=True)
    for j in range(8):
        Image.new("RGB", (12, 12), (200, 30 * j, 10)).save(tmp_path / "more" / "été" / f"{j}.png")
    more = [*data[:1], f"data.root={tmp_path / 'more'}", *data[2:], f"ckpt_path={tmp_path / 'run'}"]
    train(compose_train([*quick_run("vae+labels"), *more, "trainer.max_epochs=3"], tmp_path / "more_run"))
    resumed = torch.load(tmp_path / "more_run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["ImageFolderDataModule"]["class_names"] == ["cat", "été"]
    folder = ImageFolderDataModule(root=str(tmp_path / "more"), resolution=32, labels=True)
    folder.load_state_dict(resumed["ImageFolderDataModule"])
    assert {int(label) for _, label in folder.dataset("train")} == {1}, "été is the model's class 1"
    out = tmp_path / "eval_more"  # evaluated on that folder: the same labels
    evaluate(compose_train([f"ckpt_path={tmp_path / 'run'}", f"data_root={tmp_path / 'more'}"], out, "eval"))
    assert json.loads((out / "metrics.json").read_text())["val/nelbo"] > 0
    (tmp_path / "more" / "cow").mkdir()
    Image.new("RGB", (12, 12)).save(tmp_path / "more" / "cow" / "0.png")
    folder = ImageFolderDataModule(root=str(tmp_path / "more"), resolution=32, labels=True)
    folder.load_state_dict(resumed["ImageFolderDataModule"])
    with pytest.raises(DataError, match=r"class folders that the checkpoint's model was not trained on: cow"):
        folder.setup()
