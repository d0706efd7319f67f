"""Every image family (genlab.families) on every image datamodule; VAE and diffusion trainer options and samplers."""

import csv
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import get_class
from PIL import Image

from genlab.families import FAMILIES, IMAGE_FAMILIES
from genlab.interfaces import Reconstructor
from genlab.models.diffusion import Diffusion
from genlab.models.vae import VAE, BernoulliLogProb, discretized_gaussian_log_likelihood
from genlab.nets.flow import CouplingFlow
from genlab.nets.unet import UNet
from genlab.nets.vae import Decoder, Encoder, MLPDecoder, MLPEncoder
from genlab.pipeline import train
from tests.conftest import QUICK, SMALL, compose_train, quick_run, run_script
from tests.datasets import write_celeba, write_cifar10, write_fashion_mnist, write_image_folder


@pytest.fixture(scope="module")
def data_roots(tmp_path_factory, mnist_root) -> dict[str, list[str]]:
    root = tmp_path_factory.mktemp("datasets")
    write_celeba(root / "celeba_plain" / "img_align_celeba")
    return {
        "digits": [],
        "mnist": [f"data.root={mnist_root}"],
        "fashion_mnist": [f"data.root={write_fashion_mnist(root / 'fashion')}"],
        "cifar10": [f"data.root={write_cifar10(root / 'cifar', per_batch=8)}"],
        "celeba": [f"data.root={root / 'celeba_plain'}", "data.num_workers=0"],
        "image_folder": [f"data.root={write_image_folder(root / 'folder')}", "data.num_workers=0"],
    }


def read_csv(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def column(rows, key) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key)]


@pytest.mark.parametrize("data", ["digits", "mnist", "fashion_mnist", "cifar10", "celeba", "image_folder"])
@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_fast_dev_run_every_family_on_every_datamodule(family, data, data_roots, tmp_path):
    overrides = [
        f"model={family}",
        f"data={data}",
        *data_roots[data],
        "debug=fast_dev_run",
        "data.batch_size=4",
    ]
    metrics = train(compose_train([*overrides, *SMALL[family], "callbacks.progress_bar=null"], tmp_path))
    assert math.isfinite(metrics[FAMILIES[family].train_metric])
    (grid,) = (tmp_path / "samples").glob("epoch_*.png")
    cfg = compose_train(overrides, tmp_path)
    side = cfg.callbacks.sample_grid.nrow * (cfg.data.resolution + 2) + 2  # make_grid pads 2 px
    rows = -(-cfg.callbacks.sample_grid.num_samples // cfg.callbacks.sample_grid.nrow)
    with Image.open(grid) as image:
        assert image.size == (side, rows * (cfg.data.resolution + 2) + 2), "nrow x image size"
    if issubclass(get_class(cfg.model._target_), Reconstructor):
        assert (tmp_path / "samples" / "recon_epoch_000.png").is_file()


# ---- short real runs on MNIST (module-scoped: their checkpoints feed the sampling tests) ----
def mnist_run(tmp_path_factory, mnist_root, family: str, extra: list[str]) -> Path:
    run_dir = tmp_path_factory.mktemp(f"{family}_mnist")
    overrides = [
        f"model={family}",
        "data=mnist",
        f"data.root={mnist_root}",
        "data.batch_size=64",
        "trainer=cpu",
        "trainer.max_epochs=3",
        "+trainer.limit_val_batches=4",
        "metrics=null",
        "optimized_metric=null",
        "callbacks.progress_bar=null",
        "callbacks.sample_grid.num_samples=16",
        *extra,
    ]
    train(compose_train(overrides, run_dir))
    return run_dir


@pytest.fixture(scope="module")
def vae_mnist(tmp_path_factory, mnist_root):
    return mnist_run(
        tmp_path_factory, mnist_root, "vae", ["+trainer.limit_train_batches=60", "model.likelihood=bernoulli"]
    )


@pytest.fixture(scope="module")
def diffusion_mnist(tmp_path_factory, mnist_root):
    extra = [*SMALL["diffusion"], "+trainer.limit_train_batches=40", "model.lr=1e-3", "model.ema_decay=0.99"]
    return mnist_run(tmp_path_factory, mnist_root, "diffusion", extra)


@pytest.fixture(scope="module")
def diffusion_quick(tmp_path_factory):
    """A few batches of the small diffusion model on digits: a checkpoint for the sampling tests."""
    run_dir = tmp_path_factory.mktemp("diffusion_quick")
    # sample.py sampler=ddpm takes all the timesteps: 100, not 1000
    train(compose_train([*quick_run("diffusion"), "model.timesteps=100"], run_dir))
    return run_dir


@pytest.mark.slow
def test_vae_validation_nelbo_falls_on_mnist(vae_mnist):
    rows = read_csv(vae_mnist)
    nelbo, recon, kl = (column(rows, f"val/{k}") for k in ("nelbo", "recon", "kl"))
    assert len(nelbo) == 3 and nelbo[-1] < 0.8 * nelbo[0], nelbo
    assert all(n == pytest.approx(r + k, rel=1e-4) for n, r, k in zip(nelbo, recon, kl))
    bpd = column(rows, "val/bpd")
    assert bpd[-1] == pytest.approx(nelbo[-1] / (32 * 32 * math.log(2)), rel=1e-4)
    assert (vae_mnist / "samples" / "recon_epoch_002.png").is_file()


@pytest.mark.slow
@pytest.mark.long
def test_diffusion_validation_loss_falls_on_mnist(diffusion_mnist):
    losses = column(read_csv(diffusion_mnist), "val/loss")
    assert len(losses) == 3 and losses[-1] < 0.85 * losses[0], losses


@pytest.mark.slow
@pytest.mark.parametrize(
    ("family", "args"),
    [
        ("vae", []),
        ("diffusion", ["sampler=ddim", "steps=5"]),
        ("diffusion", ["sampler=ddpm", "format=npz"]),
        ("diffusion", ["sampler=dpmpp_2m", "steps=5"]),
    ],
)
def test_sample_script_writes_grid_and_files(family, args, vae_mnist, diffusion_quick, tmp_path):
    run_dir = {"vae": vae_mnist, "diffusion": diffusion_quick}[family]
    n = 6
    run_script(
        "sample.py",
        [f"ckpt_path={run_dir}", f"num_samples={n}", f"hydra.run.dir={tmp_path}", *args],
        tmp_path,
    )
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == (2 + n * 34, 2 + 34), "one row of n 32-px samples, 2-px padding"
    if "format=npz" in args:
        import numpy as np

        images = np.load(tmp_path / "samples.npz")["images"]
        assert images.shape == (n, 32, 32, 1) and images.dtype == np.uint8
        assert images.std() > 5, "ancestral samples are not constant"
    else:
        files = sorted((tmp_path / "samples").glob("*.png"))
        assert len(files) == n


@pytest.mark.slow
def test_sample_script_gan_checkpoint(tmp_path):
    train(compose_train(QUICK, tmp_path / "run"))
    out = tmp_path / "samples"
    run_script(
        "sample.py", [f"ckpt_path={tmp_path / 'run'}", "num_samples=5", f"hydra.run.dir={out}"], tmp_path
    )
    assert len(list((out / "samples").glob("*.png"))) == 5 and (out / "grid.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("family", [name for name in IMAGE_FAMILIES if name != "gan"])  # GAN: test_train
def test_bf16_mixed(family, tmp_path):
    base = [f"model={family}", *SMALL[family], *[q for q in QUICK if not q.startswith("model.")]]
    base.append("data.resolution=16")  # CPUs without bf16 units emulate its convolutions: 70 ms each at 32 px
    metrics = train(compose_train([*base, "trainer.precision=bf16-mixed"], tmp_path))
    assert all(math.isfinite(v) for v in metrics.values())


# ---- unit checks ----
def tiny_diffusion(**kwargs) -> Diffusion:
    torch.manual_seed(0)
    net = UNet(
        1, 16, width=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(8,), dropout=0.0
    )
    return Diffusion(net, timesteps=50, ema_decay=None, **kwargs).eval()


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_ddim_is_deterministic_for_a_seed(prediction):
    model = tiny_diffusion(prediction=prediction)

    def sample(seed: int, steps: int) -> torch.Tensor:
        return model.sample(3, torch.Generator().manual_seed(seed), sampler="ddim", steps=steps)

    assert torch.equal(sample(1, 10), sample(1, 10))
    assert not torch.equal(sample(1, 10), sample(2, 10))
    ddpm = model.sample(3, torch.Generator().manual_seed(1), sampler="ddpm")
    assert ddpm.shape == (3, 1, 16, 16) and ddpm.abs().max() <= 1


def test_ddim_steps_are_validated():
    with pytest.raises(ValueError, match=r"DDIM steps must be in \[1, 50\]"):
        tiny_diffusion().sample(1, sampler="ddim", steps=51)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_noise_schedules_destroy_signal(schedule):
    model = tiny_diffusion(schedule=schedule)
    alpha_bar = model.schedule.alpha_bar
    assert alpha_bar[0] > 0.99 and alpha_bar[-1] < 0.01
    assert torch.all(alpha_bar[1:] < alpha_bar[:-1])


def test_v_prediction_target_recovers_x0():
    model = tiny_diffusion(prediction="v")
    x0, noise, t = torch.rand(2, 1, 16, 16) * 2 - 1, torch.randn(2, 1, 16, 16), torch.tensor([5, 40])
    x_t, v = model.schedule.add_noise(x0, noise, t), model.schedule.target(x0, noise, t, "v")
    ab = model.schedule.alpha_bar[t].view(-1, 1, 1, 1)
    assert torch.allclose(ab.sqrt() * x_t - (1 - ab).sqrt() * v, x0, atol=1e-5)


def test_discretized_gaussian_is_a_distribution_over_256_bins():
    values = torch.arange(256, dtype=torch.float32) / 127.5 - 1
    for mean, log_scale in ((0.3, -2.0), (-0.99, -4.0), (0.0, 1.0)):
        log_p = discretized_gaussian_log_likelihood(
            values, torch.full_like(values, mean), torch.tensor(log_scale)
        )
        assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-4)


def test_bernoulli_log_prob_is_minus_bce_with_logits_in_value_and_gradient():
    """The fast Bernoulli log-likelihood against torch's BCE in float64, at logits up to +-100 (where a naive
    log(sigmoid) would give -inf), and its hand-written backward against autograd's numerical gradient."""
    torch.manual_seed(0)
    logits = torch.cat([torch.randn(2000) * 4, torch.tensor([-100.0, -30.0, 0.0, 30.0, 100.0] * 2)])
    x = torch.cat([(torch.rand(2000) > 0.5).float(), torch.tensor([0.0] * 5 + [1.0] * 5)])
    reference = -F.binary_cross_entropy_with_logits(logits.double(), x.double(), reduction="none")
    fast = BernoulliLogProb.apply(logits.requires_grad_(), x)
    assert (fast.double() - reference).abs().max() < 1e-5
    fast.sum().backward()
    assert torch.allclose(logits.grad, x - torch.sigmoid(logits.detach()), atol=1e-7)
    probe = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    target = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)  # both backward branches
    assert torch.autograd.gradcheck(BernoulliLogProb.apply, (probe, target))


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "discretized_gaussian"])
@pytest.mark.parametrize("nets", [(Encoder, Decoder), (MLPEncoder, MLPDecoder)])
def test_importance_weighted_bound_is_tighter_than_elbo(likelihood, nets):
    torch.manual_seed(0)
    encoder, decoder = (net(1, 16, 4, 8) for net in nets)  # conv (width 8) or MLP (8 hidden units, 28 px ok)
    model = VAE(encoder, decoder, latent_dim=4, likelihood=likelihood).eval()
    x = torch.rand(16, 1, 16, 16) * 2 - 1
    assert model.decoder(torch.zeros(2, 4)).shape == (2, 1, 16, 16)
    with torch.no_grad():
        nelbo = torch.stack([model.elbo_terms(x)["nelbo"] for _ in range(20)]).mean()
    assert model.importance_weighted_nll(x, k=64).mean() < nelbo


def test_flow_is_invertible_and_its_log_det_is_the_jacobians():
    torch.manual_seed(0)
    net = CouplingFlow(channels=1, resolution=4, hidden=16, num_layers=4)
    for layer in net.layers:  # away from the identity start
        torch.nn.init.normal_(layer.scale.weight, std=0.3)
        torch.nn.init.normal_(layer.shift.weight, std=0.3)
    x = torch.rand(3, 1, 4, 4) * 2 - 1
    z, log_det = net(x)
    assert torch.allclose(net.inverse(z), x, atol=1e-5)
    for i in range(3):
        jacobian = torch.autograd.functional.jacobian(lambda v: net(v.view(1, 1, 4, 4))[0][0], x[i].flatten())
        assert log_det[i].item() == pytest.approx(torch.linalg.slogdet(jacobian)[1].item(), abs=1e-4)


def test_bernoulli_vae_sees_only_the_binarised_image():
    """Under the Bernoulli likelihood the encoder reads the binarised image it is scored on, so grey levels
    carry no extra information: the bounds of an image and of its binarisation are equal."""
    model = VAE(MLPEncoder(1, 8, 4, 16), MLPDecoder(1, 8, 4, 16), latent_dim=4, likelihood="bernoulli").eval()
    grey = torch.rand(6, 1, 8, 8) * 2 - 1
    binary = (grey > 0).float() * 2 - 1
    bounds = []
    for x in (grey, binary):
        torch.manual_seed(3)
        bounds.append(model.importance_weighted_nll(x, k=8))
    assert torch.equal(*bounds)
