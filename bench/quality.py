"""Proof of quality: genlab's model next to a peer implementation from PyPI at equal budget, one run.

Same data, batch size, optimizer steps, learning rate and network size on both sides, this machine, one
metric path. Peers are bench extras (``pip install -e ".[bench]"``), never runtime dependencies.

- ``gan``: genlab's DCGAN (``experiment=gan_mnist``: non-saturating loss, Adam (0.5, 0.999), EMA generator) vs
  torchgan's DCGAN generator/discriminator of the same width trained by torchgan's ``Trainer`` with its
  non-saturating minimax losses, MNIST at 32 px, the same batches. torchgan is trained twice: with its own
  Kaiming-normal init (as shipped) and with the DCGAN paper's N(0, 0.02) init, which genlab uses; the latter is
  the peer compared. FID/KID of all through `eval.py samples=` against the test split; genlab's raw (non-EMA)
  generator is scored beside its EMA one.
- ``diffusion``: genlab's DDPM (``experiment=diffusion_mnist`` at a narrower UNet) vs denoising-diffusion-pytorch's
  ``Unet`` + ``GaussianDiffusion`` set to genlab's objective (eps), schedule (linear, T=1000) and sampler
  (DDIM, 50 steps), trained by its own ``Trainer`` (EMA, clipping) from a folder of the same images.
- ``vae``: genlab's VAE (``experiment=vae_mnist_nll``'s 784-200-200-50 tanh MLPs, Bernoulli likelihood,
  trained by ``src/train.py``'s pipeline) vs pythae's ``VAE`` with the same two networks (pythae's
  ``BaseEncoder``/``BaseDecoder``) trained by pythae's own ``TrainingPipeline``. MNIST at 28 px binarised at
  0.5 (pythae's trainer takes a fixed dataset), Adam at constant lr. Both are scored by genlab's
  importance-weighted NLL (Burda et al.) on the test split, pythae's model wrapped unchanged; pythae's own
  ``get_nll`` is reported beside it as a cross-check of the estimator.
- ``gpt``: genlab's GPT (``experiment=gpt_shakespeare_char_cpu``, 4 layers x 128) vs transformers'
  ``GPT2LMHeadModel`` of the same shape (biases, exact GELU, no dropout: the same architecture), trained in a plain loop on the same batches with the
  same AdamW groups (decay on matrices), betas, warm-up and cosine schedule; validation loss on the same
  batches, and training tokens/s.

    python bench/quality.py --family gan|vae|diffusion|gpt [--quick] [--rounds N (vae)]
"""

import copy
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHAKESPEARE, SHARED, compose_config, compose_train  # noqa: E402
from _results import bench_parser, report  # noqa: E402

from genlab.checkpoints import load_checkpoint  # noqa: E402
from genlab.metrics.inception import to_uint8  # noqa: E402
from genlab.models.schedules import make_schedule  # noqa: E402
from genlab.nets.vae import mlp  # noqa: E402
from genlab.pipeline import fill_model_inputs, train  # noqa: E402
from genlab.sample_eval import evaluate_samples  # noqa: E402


def genlab_run(cfg: DictConfig, out: Path) -> tuple[Any, Any, float]:
    """``src/train.py`` on ``cfg`` in ``out``: (trained module from last.ckpt, datamodule, wall seconds)."""
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    start = time.perf_counter()
    train(cfg)
    seconds = time.perf_counter() - start
    datamodule = instantiate(cfg.data, _convert_="all")
    fill_model_inputs(cfg, datamodule)
    model = instantiate(cfg.model, _convert_="all")
    model.load_state_dict(load_checkpoint(out / "checkpoints" / "last.ckpt")["state_dict"])
    return model.eval(), datamodule, seconds


def alternate(sides: dict[str, Callable[[int], tuple[Any, float]]], rounds: int) -> tuple[list, dict]:
    """Each side's training ``rounds`` times, the order alternating round by round, so that the host's drift
    (several % over minutes on a shared machine) falls on both sides alike: the first round's model of each side
    (in the order of ``sides``) and every round's seconds per side."""
    models, seconds = {}, {side: [] for side in sides}
    for r in range(rounds):
        for side in list(sides) if r % 2 == 0 else list(reversed(sides)):
            model, elapsed = sides[side](r)
            models.setdefault(side, model)
            seconds[side].append(round(elapsed, 1))
    return [models[side] for side in sides], seconds


def time_ratio(seconds: dict[str, list[float]]) -> dict:
    """genlab / peer wall time: the median of the rounds' own ratios (a round's two runs share the host's speed),
    with each round's seconds when there were several."""
    ratios = [g / p for g, p in zip(seconds["genlab"], seconds["peer"])]
    if len(ratios) == 1:
        return {"time_ratio": round(ratios[0], 3)}
    return {
        "time_ratio": round(statistics.median_low(ratios), 3),
        "rounds": len(ratios),
        "seconds_per_round": seconds,
    }


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- VAE vs pythae ----
def pythae_networks(latent_dim: int, width: int, depth: int):
    """pythae encoder/decoder with genlab's MLP layers (0/1 pixels in; Bernoulli means out, as pythae's bce)."""
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = mlp([784, *[width] * depth, 2 * latent_dim])

        def forward(self, x):
            mean, logvar = self.net(x.flatten(1)).chunk(2, dim=1)
            return ModelOutput(embedding=mean, log_covariance=logvar)

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = mlp([latent_dim, *[width] * depth, 784])

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)).view(-1, 1, 28, 28))

    return Encoder(), Decoder()


class AsGenlabEncoder(nn.Module):
    """pythae's encoder as genlab's VAE calls it: images in [-1, 1] -> (mean, log-variance)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder, self.num_classes = encoder, None

    def forward(self, x, labels=None):
        out = self.encoder((x > 0).float())
        return out.embedding, out.log_covariance


class AsGenlabDecoder(nn.Module):
    """pythae's decoder as genlab's Bernoulli VAE calls it: z -> logits."""

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder, self.channels, self.num_classes = decoder, 1, None

    def forward(self, z, labels=None):
        return torch.logit(self.decoder(z).reconstruction.clamp(1e-7, 1 - 1e-7))


def split_tensor(dataset, limit: int | None = None) -> torch.Tensor:
    """A split's images stacked, (N, 1, 28, 28) in [-1, 1]."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    return torch.stack([dataset[i] for i in range(n)])


@torch.no_grad()
def iw_nll(model, images: torch.Tensor, k: int, seed: int = 0) -> float:
    """genlab's importance-weighted NLL (nats per image), mean over ``images``, seeded."""
    torch.manual_seed(seed)
    return float(torch.cat([model.importance_weighted_nll(x, k) for x in images.split(500)]).mean())


def bench_vae(quick: bool, overrides: list[str], rounds: int = 1) -> dict:
    from pythae.models import VAE as PythaeVAE
    from pythae.models import VAEConfig
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig

    epochs, batch, lr, k = (1, 100, 1e-3, 10) if quick else (10, 100, 1e-3, 1000)
    test_limit = 200 if quick else None
    cfg = compose_train(
        [
            *overrides,  # e.g. seed=N (--seeds)
            "experiment=vae_mnist_nll",
            f"data.root={SHARED / 'data'}",
            "data.binarize=null",  # the Bernoulli likelihood thresholds at 0.5, as the peer's data
            f"data.batch_size={batch}",
            f"trainer.max_epochs={epochs}",
            "model.lr_schedule=constant",
            "model.optimizer.eps=1e-8",  # pythae's Adam: torch defaults
            "callbacks.progress_bar=null",
            "callbacks.sample_grid=null",
            *(["+trainer.limit_train_batches=20"] if quick else []),
        ]
    )
    width, depth = cfg.model.encoder.width, cfg.model.encoder.depth
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup()
    train_images = split_tensor(datamodule.train_set, 20 * batch if quick else None)
    val_images = split_tensor(datamodule.val_set, 200 if quick else None)
    test_images = split_tensor(datamodule.test_set, test_limit)
    binary = {name: (x > 0).float().numpy() for name, x in (("train", train_images), ("val", val_images))}

    def train_peer(out: Path) -> tuple[Any, float]:
        pl.seed_everything(cfg.seed, verbose=False)
        encoder, decoder = pythae_networks(cfg.model.latent_dim, width, depth)
        config = VAEConfig(input_dim=(1, 28, 28), latent_dim=cfg.model.latent_dim, reconstruction_loss="bce")
        peer = PythaeVAE(config, encoder=encoder, decoder=decoder)
        trainer_cfg = BaseTrainerConfig(
            output_dir=str(out),
            per_device_train_batch_size=batch,
            per_device_eval_batch_size=batch,
            num_epochs=epochs,
            learning_rate=lr,
            optimizer_cls="Adam",
            no_cuda=True,
            steps_saving=None,
            seed=cfg.seed,
        )
        start = time.perf_counter()
        TrainingPipeline(training_config=trainer_cfg, model=peer)(
            train_data=binary["train"], eval_data=binary["val"]
        )
        return peer.eval(), time.perf_counter() - start

    with tempfile.TemporaryDirectory(prefix="genlab_quality_") as tmp:

        def train_genlab(r: int) -> tuple[Any, float]:
            model, _, elapsed = genlab_run(cfg, Path(tmp) / f"genlab_{r}")
            return model, elapsed

        sides = {"genlab": train_genlab, "peer": lambda r: train_peer(Path(tmp) / f"pythae_{r}")}
        (ours, peer), seconds = alternate(sides, rounds)

    wrapped = copy.deepcopy(ours)
    wrapped.encoder, wrapped.decoder = AsGenlabEncoder(peer.encoder), AsGenlabDecoder(peer.decoder)
    ours_nll, peer_nll = iw_nll(ours, test_images, k), iw_nll(wrapped, test_images, k)
    torch.manual_seed(0)
    peer_own = -float(
        peer.get_nll((test_images > 0).float(), n_samples=k, batch_size=100)
    )  # it gives log p(x)
    return {
        "data": f"MNIST 28 px binarised at 0.5; test split, {len(test_images)} images",
        "budget": f"{epochs} epoch(s) of batch {batch}, Adam lr {lr} constant",
        "metric": f"test NLL (nats), importance-weighted, k={k}",
        "genlab": {
            "nll": round(ours_nll, 2),
            "seconds": statistics.median_low(seconds["genlab"]),
            "parameters": parameters(ours),
        },
        "peer": {
            "name": "pythae VAE",
            "nll": round(peer_nll, 2),
            "nll_by_pythae_get_nll": round(peer_own, 2),
            "seconds": statistics.median_low(seconds["peer"]),
            "parameters": parameters(peer),
        },
        "nll_ratio": round(ours_nll / peer_nll, 3),
        **time_ratio(seconds),
    }


# ---- GPT vs transformers ----
def hf_gpt(cfg: DictConfig, vocab_size: int) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    net = cfg.model.net
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=cfg.data.block_size,
        n_embd=net.n_embd,
        n_layer=net.n_layer,
        n_head=net.n_head,
        resid_pdrop=net.dropout,
        embd_pdrop=net.dropout,
        attn_pdrop=net.dropout,
        activation_function="gelu",  # exact GELU, as genlab's MLP (GPT-2's default is the tanh form)
        bos_token_id=None,  # a character vocabulary has no GPT-2 end-of-text token
        eos_token_id=None,
    )
    return GPT2LMHeadModel(config)


@torch.no_grad()
def hf_val_loss(model: nn.Module, batches: list) -> float:
    model.eval()
    losses = [F.cross_entropy(model(x).logits.flatten(0, 1), y.flatten()) for x, y in batches]
    model.train()
    return float(torch.stack(losses).mean())


def bench_gpt(quick: bool, overrides: list[str]) -> dict:
    steps, val_batches = (20, 10) if quick else (2000, 200)
    cfg = compose_train(
        [
            *overrides,  # e.g. seed=N (--seeds)
            "experiment=gpt_shakespeare_char_cpu",
            f"data.path={SHAKESPEARE}",
            "model.net.bias=true",  # GPT-2's layout: biases in every linear and LayerNorm
            f"trainer.max_steps={steps}",
            f"trainer.val_check_interval={steps}",
            f"trainer.limit_val_batches={val_batches}",
            "callbacks.progress_bar=null",
            "callbacks.text_samples=null",
        ]
    )
    hp = cfg.model
    with tempfile.TemporaryDirectory(prefix="genlab_quality_") as tmp:
        ours, datamodule, our_seconds = genlab_run(cfg, Path(tmp))
        metrics = json.loads((Path(tmp) / "metrics.json").read_text())
    datamodule.setup("fit")
    vocab = datamodule.model_inputs()["vocab_size"]
    val = [b for _, b in zip(range(val_batches), datamodule.val_dataloader())]

    pl.seed_everything(cfg.seed, verbose=False)
    peer = hf_gpt(cfg, vocab)
    params = [p for p in peer.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": hp.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas))
    schedule = make_schedule(opt, hp.lr_schedule, steps, hp.warmup_steps, hp.final_lr_ratio)
    clip = cfg.trainer.gradient_clip_val
    step, start = 0, time.perf_counter()
    while step < steps:
        for x, y in datamodule.train_dataloader():
            loss = F.cross_entropy(peer(x).logits.flatten(0, 1), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            schedule.step()
            step += 1
            if step == steps:
                break
    peer_loss = hf_val_loss(peer, val)  # timed, as genlab's run validates once at its end
    peer_seconds = time.perf_counter() - start
    tokens = steps * cfg.data.batch_size * cfg.data.block_size
    ours_loss = metrics["val/loss"]
    return {
        "data": f"tiny shakespeare (char), validation split, {val_batches} batches of {cfg.data.batch_size}x{cfg.data.block_size}",
        "budget": f"{steps} steps of batch {cfg.data.batch_size}, AdamW lr {hp.lr} (warm-up {hp.warmup_steps}, {hp.lr_schedule})",
        "metric": "validation loss (nats per token)",
        "genlab": {
            "val_loss": round(ours_loss, 4),
            "tokens_per_s": round(tokens / our_seconds),
            "seconds": round(our_seconds, 1),
            "parameters": parameters(ours.net),
        },
        "peer": {
            "name": "transformers GPT2LMHeadModel",
            "val_loss": round(peer_loss, 4),
            "tokens_per_s": round(tokens / peer_seconds),
            "seconds": round(peer_seconds, 1),
            "parameters": parameters(peer),
        },
        "loss_ratio": round(ours_loss / peer_loss, 3),
        "time_ratio": round(our_seconds / peer_seconds, 3),
    }


# ---- image metrics of both sides: `eval.py samples=` ----
FID_WEIGHTS = SHARED / "weights" / "fid_inception_v3_2015_12_05.pth"


def fid_of(
    images: torch.Tensor, data: list[str], out: Path, split: str = "test", max_real: int = 10_000
) -> dict[str, float]:
    """FID and KID of ``images`` ([-1, 1], (N, C, H, W)) against ``split`` of ``data``, through genlab's own
    path for samples from anywhere (`python src/eval.py samples=<npz> data=...`): one Inception, the same
    cached real statistics for both sides."""
    path = out / f"samples_{len(list(out.glob('samples_*.npz')))}.npz"
    np.savez(path, samples=to_uint8(images)[:, :1].permute(0, 2, 3, 1).numpy())
    cfg = compose_config(
        "eval",
        [
            f"samples={path}",
            *data,
            f"split={split}",
            "image_metrics=default",
            f"metrics.fid.weights_path={FID_WEIGHTS}",
            "metrics.fid.download=false",
            f"metrics.max_real={max_real}",
            f"metrics.kid.subset_size={min(1000, len(images), max_real)}",
        ],
    )
    metrics = evaluate_samples(cfg)
    return {"fid": round(metrics[f"{split}/fid"], 2), "kid": round(metrics[f"{split}/kid_mean"], 4)}


@torch.no_grad()
def in_batches(draw, num: int, batch: int = 250) -> torch.Tensor:
    """``num`` samples from ``draw(n)``, ``batch`` at a time."""
    return torch.cat([draw(min(batch, num - i)) for i in range(0, num, batch)])


# genlab runs of the image benches only train (max_steps decides): no validation, FID or grids, as the peers;
# both sides are scored after training through the same path
TRAIN_ONLY = [
    "trainer.max_epochs=-1",
    "metrics=null",
    "optimized_metric=null",
    "callbacks.progress_bar=null",
    "callbacks.sample_grid=null",
    "++trainer.limit_val_batches=0",
    "trainer.num_sanity_val_steps=0",
]


def mnist(resolution: int) -> list[str]:
    return ["data=mnist", f"data.root={SHARED / 'data'}", f"data.resolution={resolution}"]


# ---- GAN vs torchgan ----
def bench_gan(quick: bool, overrides: list[str], rounds: int = 1) -> dict:
    """genlab's DCGAN (``experiment=gan_mnist``) vs torchgan's ``DCGANGenerator``/``DCGANDiscriminator``
    trained by torchgan's own ``Trainer`` with its non-saturating minimax losses, re-initialised as the DCGAN
    paper; with ``rounds`` > 1 both train that many times, alternating which goes first (:func:`alternate`).
    torchgan as shipped (its Kaiming init) trains once, for its FID."""
    steps, batch, lr, num = (10, 64, 2e-4, 32) if quick else (1000, 128, 2e-4, 2000)
    real_images = 64 if quick else 10_000  # of the test split, for the real statistics (cached)
    cfg = compose_train(
        [
            *overrides,  # e.g. seed=N (--seeds)
            "experiment=gan_mnist",
            *mnist(32),
            f"data.batch_size={batch}",
            f"trainer.max_steps={2 * steps}",  # a D and a G step per batch
            *TRAIN_ONLY,
        ]
    )
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    images = split_tensor(datamodule.train_set)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    order = torch.cat(
        [
            torch.randperm(len(images), generator=shuffle)
            for _ in range(math.ceil(steps * batch / len(images)))
        ]
    )
    real = images[
        order[: steps * batch]
    ]  # one torchgan "epoch" of exactly `steps` batches, reshuffled epochs
    gen = torch.Generator().manual_seed(cfg.seed)
    with tempfile.TemporaryDirectory(prefix="genlab_quality_") as tmp:
        tmp = Path(tmp)

        def fid(draw) -> dict:
            return fid_of(in_batches(draw, num), mnist(32), tmp, max_real=real_images)

        def peer_fid(peer: nn.Module) -> dict:
            return fid(lambda n: peer(torch.randn(n, peer.encoding_dims, generator=gen)))

        def train_genlab(r: int) -> tuple[Any, float]:
            model, _, elapsed = genlab_run(cfg, tmp / f"genlab_{r}")
            return model, elapsed

        def train_peer(r: int, paper_init: bool = True) -> tuple[Any, float]:
            *trained, elapsed = torchgan_run(
                cfg, real, batch, lr, tmp / f"torchgan_{paper_init}_{r}", paper_init
            )
            return trained, elapsed

        (ours, (peer, peer_parameters)), seconds = alternate(
            {"genlab": train_genlab, "peer": train_peer}, rounds
        )
        (shipped, shipped_parameters), shipped_seconds = train_peer(0, paper_init=False)
        ours_ema = fid(lambda n: ours.sample(n, gen))
        ours_raw = fid(lambda n: ours.generator(ours.noise(n, gen)).clamp(-1, 1))
        peers = {
            "paper_init": {**peer_fid(peer), "seconds": statistics.median_low(seconds["peer"])},
            "as_shipped": {**peer_fid(shipped), "seconds": round(shipped_seconds, 1)},
        }
    return {
        "data": f"MNIST 32 px; FID/KID of {num} samples vs the test split ({real_images} images)",
        "budget": f"{steps} D+G steps of batch {batch}, Adam lr {lr} betas {tuple(cfg.model.betas)}",
        "metric": "FID (lower is better), genlab's metric path (eval.py samples=)",
        "genlab": {
            "fid": ours_ema["fid"],
            "kid": ours_ema["kid"],
            "fid_without_ema": ours_raw["fid"],
            "seconds": statistics.median_low(seconds["genlab"]),
            "parameters": parameters(ours.generator) + parameters(ours.discriminator),
        },
        "peer": {
            "name": "torchgan DCGAN, DCGAN-paper init",
            **peers["paper_init"],
            "parameters": peer_parameters,
        },
        "peer_as_shipped": {
            "name": "torchgan DCGAN, its own (Kaiming) init",
            **peers["as_shipped"],
            "parameters": shipped_parameters,
        },
        "fid_ratio": round(ours_ema["fid"] / peers["paper_init"]["fid"], 3),
        **time_ratio(seconds),
    }


def torchgan_run(
    cfg: DictConfig, real: torch.Tensor, batch: int, lr: float, out: Path, paper_init: bool
) -> tuple[nn.Module, int, float]:
    """torchgan's DCGAN of genlab's width trained by its own ``Trainer`` on ``real`` (one epoch): (G in eval
    mode, parameters of G and D, wall seconds). torchgan initialises every convolution Kaiming-normal,
    which leaves about half of the initial generator's pixels saturated by its Tanh (a flat gradient);
    ``paper_init`` re-initialises both networks as the DCGAN paper does (and genlab): N(0, 0.02) convolutions,
    N(1, 0.02) BatchNorm scales."""
    import os

    os.environ.setdefault("TENSORBOARD_LOGGING", "0")
    os.environ.setdefault("VISDOM_LOGGING", "0")
    from torchgan.losses import MinimaxDiscriminatorLoss, MinimaxGeneratorLoss
    from torchgan.models import DCGANDiscriminator, DCGANGenerator
    from torchgan.trainer import Trainer

    from genlab.nets.dcgan import init_weights

    pl.seed_everything(cfg.seed, verbose=False)
    width, adam = cfg.model.generator.width, {"lr": lr, "betas": tuple(cfg.model.betas)}
    models = {
        "generator": {
            "name": DCGANGenerator,
            "args": {
                "encoding_dims": cfg.model.generator.latent_dim,
                "out_size": 32,
                "out_channels": 1,
                "step_channels": width,
            },
            "optimizer": {"name": torch.optim.Adam, "args": adam},
        },
        "discriminator": {
            "name": DCGANDiscriminator,
            "args": {"in_size": 32, "in_channels": 1, "step_channels": width},
            "optimizer": {"name": torch.optim.Adam, "args": adam},
        },
    }
    trainer = Trainer(
        models,
        [MinimaxGeneratorLoss(), MinimaxDiscriminatorLoss()],
        device=torch.device("cpu"),
        epochs=1,
        checkpoints=str(out / "gan"),
        recon=str(out / "images"),
        log_dir=str(out / "logs"),
    )
    if paper_init:  # before the first step: the optimizers' state is still empty
        trainer.generator.apply(init_weights)
        trainer.discriminator.apply(init_weights)
    # torchgan 0.1.0's epoch-end image grid calls torchvision's make_grid(range=...), removed since: drop it
    trainer.logger.logger_end_epoch = [
        v for v in trainer.logger.logger_end_epoch if type(v).__name__ != "ImageVisualize"
    ]
    loader = torch.utils.data.DataLoader(real, batch_size=batch, shuffle=True, drop_last=True)
    start = time.perf_counter()
    trainer(loader)
    seconds = time.perf_counter() - start
    return (
        trainer.generator.eval(),
        parameters(trainer.generator) + parameters(trainer.discriminator),
        seconds,
    )


# ---- diffusion vs denoising-diffusion-pytorch ----
def bench_diffusion(quick: bool, overrides: list[str]) -> dict:
    """genlab's DDPM (eps-prediction, linear schedule, T=1000, EMA, DDIM-50 samples) vs
    denoising-diffusion-pytorch's ``Unet`` + ``GaussianDiffusion`` set to the same objective, schedule and
    sampler, trained by its own ``Trainer`` (EMA, clipping) from a folder of the same images."""
    from denoising_diffusion_pytorch import GaussianDiffusion, Unet
    from denoising_diffusion_pytorch import Trainer as PeerTrainer

    steps, batch, lr, num, width = (10, 16, 2e-4, 32, 16) if quick else (1500, 64, 2e-4, 2000, 32)
    real_images = 64 if quick else 10_000  # at most: the whole val split (6000 images)
    cfg = compose_train(
        [
            *overrides,  # e.g. seed=N (--seeds)
            "experiment=diffusion_mnist",
            *mnist(16),
            f"data.batch_size={batch}",
            f"model.net.width={width}",
            f"model.net.attention_resolutions=[{16 // 2}]",  # half the input size, as the experiment at 32 px
            f"model.lr={lr}",
            f"trainer.max_steps={steps}",
            *TRAIN_ONLY,
        ]
    )
    with tempfile.TemporaryDirectory(prefix="genlab_quality_") as tmp:
        tmp = Path(tmp)
        ours, datamodule, our_seconds = genlab_run(cfg, tmp / "genlab")
        datamodule.setup("fit")
        folder = tmp / "images"
        folder.mkdir()
        for i, image in enumerate(to_uint8(split_tensor(datamodule.train_set, max(steps * batch, 100)))):
            Image.fromarray(image[0].numpy()).save(folder / f"{i:05d}.png")

        pl.seed_everything(cfg.seed, verbose=False)
        unet = Unet(dim=width, dim_mults=tuple(cfg.model.net.channel_mults), channels=1, flash_attn=False)
        peer = GaussianDiffusion(
            unet,
            image_size=16,
            timesteps=cfg.model.timesteps,
            sampling_timesteps=cfg.model.sample_steps,  # DDIM (eta 0), as genlab's sampler
            objective="pred_noise",
            beta_schedule="linear",
        )
        trainer = PeerTrainer(
            peer,
            str(folder),
            train_batch_size=batch,
            train_lr=lr,
            train_num_steps=steps,
            augment_horizontal_flip=False,  # digits
            save_and_sample_every=steps + 1,  # no intermediate sampling
            results_folder=str(tmp / "peer"),
            calculate_fid=False,  # its FID downloads weights; both sides use genlab's metric path below
        )
        start = time.perf_counter()
        trainer.train()
        peer_seconds = time.perf_counter() - start
        peer_ema = trainer.ema.ema_model.eval()

        gen = torch.Generator().manual_seed(cfg.seed)
        ours_fid = fid_of(in_batches(lambda n: ours.sample(n, gen), num), mnist(16), tmp, "val", real_images)
        torch.manual_seed(cfg.seed)
        peer_fid = fid_of(
            in_batches(lambda n: peer_ema.sample(batch_size=n) * 2 - 1, num),
            mnist(16),
            tmp,
            "val",
            real_images,
        )
    return {
        "data": f"MNIST 16 px; FID/KID of {num} samples (DDIM, {cfg.model.sample_steps} steps) vs the val split ({min(real_images, 6000)} images)",
        "budget": f"{steps} steps of batch {batch}, lr {lr}, UNet width {width} mults {list(cfg.model.net.channel_mults)}"
        f" attention at {list(cfg.model.net.attention_resolutions)} px (peer: full attention at 4 px, linear above)",
        "metric": "FID (lower is better), genlab's metric path (eval.py samples=)",
        "genlab": {
            "fid": ours_fid["fid"],
            "kid": ours_fid["kid"],
            "seconds": round(our_seconds, 1),
            "parameters": parameters(ours.net),
        },
        "peer": {
            "name": "denoising-diffusion-pytorch",
            "fid": peer_fid["fid"],
            "kid": peer_fid["kid"],
            "seconds": round(peer_seconds, 1),
            "parameters": parameters(unet),
        },
        "fid_ratio": round(ours_fid["fid"] / peer_fid["fid"], 3),
        "time_ratio": round(our_seconds / peer_seconds, 3),
    }


FAMILIES = {"gan": bench_gan, "vae": bench_vae, "diffusion": bench_diffusion, "gpt": bench_gpt}


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--family", choices=list(FAMILIES), required=True)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="one run per seed (both sides), and the spread of each side's metric",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="vae, gan: train both sides this many times, alternating which goes first; time ratio = median of "
        "the rounds' own ratios (the host's speed drifts between runs)",
    )
    args = parser.parse_args()
    if args.rounds > 1 and args.family not in ("vae", "gan"):
        parser.error("--rounds applies to --family vae and gan (a diffusion or GPT run takes many minutes)")
    if args.seeds:
        spread(args.family, args.seeds, args.quick)
        return
    result = FAMILIES[args.family](args.quick, [], **({"rounds": args.rounds} if args.rounds > 1 else {}))
    ours, peer = result["genlab"], result["peer"]
    metric = headline_metric(result)
    summary = (
        f"quality {args.family}: {result['metric']}: genlab {ours[metric]} in {ours['seconds']} s vs "
        f"{peer['name']} {peer[metric]} in {peer['seconds']} s"
    )
    report(f"quality_{args.family}", args.quick, result, summary)


def headline_metric(result: dict) -> str:
    return next(k for k in result["genlab"] if k not in ("seconds", "parameters", "tokens_per_s"))


def spread(family: str, seeds: list[int], quick: bool) -> None:
    """``quality_<family>_seeds.json``: each seed's run, and per side the metric's values, mean and range."""
    runs = [FAMILIES[family](quick, [f"seed={seed}"]) for seed in seeds]
    metric = headline_metric(runs[0])
    sides = {}
    for side in ("genlab", "peer"):
        values = [r[side][metric] for r in runs]
        sides[side] = {
            "values": values,
            "mean": round(sum(values) / len(values), 4),
            "range": [min(values), max(values)],
        }
    better = sum(  # lower is better for every headline metric (FID, NLL, loss)
        r["genlab"][metric] <= r["peer"][metric] for r in runs
    )
    result = {
        "metric": runs[0]["metric"],
        "seeds": seeds,
        metric: sides,
        "genlab_at_most_peer": f"{better} of {len(runs)}",
        "runs": runs,
    }
    summary = (
        f"quality {family}, seeds {seeds}: {metric} genlab {sides['genlab']['values']} (mean {sides['genlab']['mean']}) "
        f"vs {runs[0]['peer']['name']} {sides['peer']['values']} (mean {sides['peer']['mean']})"
    )
    report(f"quality_{family}_seeds", quick, result, summary)


if __name__ == "__main__":
    main()
