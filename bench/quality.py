"""Proof of quality: genlab's model next to a peer implementation from PyPI at equal budget, one run.

Same data, batch size, optimizer steps, learning rate and network size on both sides, this machine, one
metric path. Peers are bench extras (``pip install -e ".[bench]"``), never runtime dependencies.

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

    python bench/quality.py --family vae|gpt [--quick]
"""

import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHAKESPEARE, SHARED, compose_train  # noqa: E402
from _results import bench_parser, report  # noqa: E402

from genlab.checkpoints import load_checkpoint  # noqa: E402
from genlab.models.schedules import make_schedule  # noqa: E402
from genlab.nets.vae import mlp  # noqa: E402
from genlab.pipeline import fill_model_inputs, train  # noqa: E402


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


def bench_vae(quick: bool) -> dict:
    from pythae.models import VAE as PythaeVAE
    from pythae.models import VAEConfig
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig

    epochs, batch, lr, k = (1, 100, 1e-3, 10) if quick else (10, 100, 1e-3, 1000)
    test_limit = 200 if quick else None
    cfg = compose_train(
        [
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
    with tempfile.TemporaryDirectory(prefix="genlab_quality_") as tmp:
        ours, datamodule, our_seconds = genlab_run(cfg, Path(tmp) / "genlab")
        datamodule.setup()
        train_images = split_tensor(datamodule.train_set, 20 * batch if quick else None)
        val_images = split_tensor(datamodule.val_set, 200 if quick else None)
        test_images = split_tensor(datamodule.test_set, test_limit)

        pl.seed_everything(cfg.seed, verbose=False)
        encoder, decoder = pythae_networks(cfg.model.latent_dim, width, depth)
        config = VAEConfig(input_dim=(1, 28, 28), latent_dim=cfg.model.latent_dim, reconstruction_loss="bce")
        peer = PythaeVAE(config, encoder=encoder, decoder=decoder)
        trainer_cfg = BaseTrainerConfig(
            output_dir=str(Path(tmp) / "pythae"),
            per_device_train_batch_size=batch,
            per_device_eval_batch_size=batch,
            num_epochs=epochs,
            learning_rate=lr,
            optimizer_cls="Adam",
            no_cuda=True,
            steps_saving=None,
            seed=cfg.seed,
        )
        binary = {name: (x > 0).float().numpy() for name, x in (("train", train_images), ("val", val_images))}
        start = time.perf_counter()
        TrainingPipeline(training_config=trainer_cfg, model=peer)(
            train_data=binary["train"], eval_data=binary["val"]
        )
        peer_seconds = time.perf_counter() - start
        peer.eval()

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
            "seconds": round(our_seconds, 1),
            "parameters": parameters(ours),
        },
        "peer": {
            "name": "pythae VAE",
            "nll": round(peer_nll, 2),
            "nll_by_pythae_get_nll": round(peer_own, 2),
            "seconds": round(peer_seconds, 1),
            "parameters": parameters(peer),
        },
        "nll_ratio": round(ours_nll / peer_nll, 3),
        "time_ratio": round(our_seconds / peer_seconds, 3),
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


def bench_gpt(quick: bool) -> dict:
    steps, val_batches = (20, 10) if quick else (2000, 200)
    cfg = compose_train(
        [
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
    peer_seconds = time.perf_counter() - start
    tokens = steps * cfg.data.batch_size * cfg.data.block_size
    ours_loss, peer_loss = metrics["val/loss"], hf_val_loss(peer, val)
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


FAMILIES = {"vae": bench_vae, "gpt": bench_gpt}


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--family", choices=list(FAMILIES), required=True)
    args = parser.parse_args()
    result = FAMILIES[args.family](args.quick)
    ours, peer = result["genlab"], result["peer"]
    metric = next(k for k in ours if k not in ("seconds", "parameters", "tokens_per_s"))
    summary = (
        f"quality {args.family}: {result['metric']}: genlab {ours[metric]} in {ours['seconds']} s vs "
        f"{peer['name']} {peer[metric]} in {peer['seconds']} s"
    )
    report(f"quality_{args.family}", args.quick, result, summary)


if __name__ == "__main__":
    main()
