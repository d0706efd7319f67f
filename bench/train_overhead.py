"""Training overhead per family: steps/s of `src/train.py` vs a plain PyTorch loop, same networks and data.

For each family (the default gan and vae on MNIST, a narrow diffusion UNet at 16 px, and
experiment=gpt_shakespeare_char_cpu)
the real `train` config is composed in this process. genlab trains it with its default logger (csv),
callbacks (checkpointing, lr monitor, divergence guard, ...) and progress bar, validation off. The plain
loop instantiates the same model and datamodule from that config and does each batch's math by calling
the module's own methods (GAN: D + G step, EMA; VAE: ELBO; diffusion: loss + EMA; GPT: NLL, grad clipping),
with the optimizers and LR schedules of its ``configure_optimizers``. The sides alternate for several
rounds; the best time of each is compared over the same batches after a warm-up. Besides the ratio, the
fixed cost genlab adds per batch (ms) is reported: the ratio of any other model follows from its step time.

    python bench/train_overhead.py [--family gan] [--data ../shared/data/tinyshakespeare/input.txt] [--quick]
"""

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHAKESPEARE, SHARED, BatchTimer, compose_train, genlab_train, run_dir, timed_loop  # noqa: E402
from _results import bench_parser, report  # noqa: E402

from genlab.models import gan_losses  # noqa: E402
from genlab.models.schedules import make_schedule  # noqa: E402
from genlab.pipeline import fill_vocab_size  # noqa: E402

# MNIST (469 batches an epoch): the timed window holds no epoch end, whose checkpoint writes are per epoch.
IMAGES = [
    "trainer=cpu",
    "data=mnist",
    f"data.root={SHARED / 'data'}",
    "metrics=null",
    "optimized_metric=null",
]
FAMILIES = {  # small models: the default GAN and VAE, a narrow UNet at 16 px, the GPT CPU experiment
    "gan": [*IMAGES, "model=gan"],
    "vae": [*IMAGES, "model=vae"],
    "diffusion": [
        *IMAGES,
        "model=diffusion",
        "data.resolution=16",
        "data.batch_size=32",
        "model.net.width=32",
        "model.net.channel_mults=[1,2]",
        "model.net.num_res_blocks=1",
        "model.net.attention_resolutions=[8]",
    ],
    "gpt": ["experiment=gpt_shakespeare_char_cpu"],
}
Step = Callable[[Any, int], None]


def images(batch: Any) -> torch.Tensor:
    return batch[0] if isinstance(batch, (list, tuple)) else batch


def descend(loss: torch.Tensor, opt: torch.optim.Optimizer, clip: float | None = None) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], clip)
    opt.step()


def gan_step(model, cfg: DictConfig, total: int) -> Step:
    """D step on detached fakes (G frozen), then G step (D frozen), EMA of G; GAN.training_step's math."""
    hp, gen, disc = model.hparams, model.generator, model.discriminator
    opt_g = torch.optim.Adam(gen.parameters(), lr=hp.lr, betas=tuple(hp.betas))
    opt_d = torch.optim.Adam(disc.parameters(), lr=hp.d_lr or hp.lr, betas=tuple(hp.betas))
    schedules = [make_schedule(opt, hp.lr_schedule, total) for opt in (opt_g, opt_d)]

    def step(batch: Any, index: int) -> None:
        real = images(batch)
        gen.requires_grad_(False)
        fake = gen(model.noise(real.shape[0])).detach()
        descend(gan_losses.d_loss(hp.loss, disc(real), disc(fake)), opt_d)
        gen.requires_grad_(True)
        if (index + 1) % hp.n_critic == 0:
            disc.requires_grad_(False)
            descend(gan_losses.g_loss(hp.loss, disc(gen(model.noise(real.shape[0])))), opt_g)
            disc.requires_grad_(True)
            if model.g_ema is not None:
                model.g_ema.update(gen)
        for schedule in schedules:
            schedule.step()

    return step


def vae_step(model, cfg: DictConfig, total: int) -> Step:
    """recon + beta_t * kl from ``elbo_terms``; AdamW on every parameter (incl. the pixel scale)."""
    hp = model.hparams
    opt = torch.optim.AdamW(model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    schedule = make_schedule(opt, hp.lr_schedule, total, hp.warmup_steps)

    def step(batch: Any, index: int) -> None:
        terms = model.elbo_terms(images(batch))
        beta = hp.beta * (min(1.0, index / hp.kl_warmup_steps) if hp.kl_warmup_steps else 1.0)
        descend(terms["recon"] + beta * terms["kl"], opt)
        schedule.step()

    return step


def diffusion_step(model, cfg: DictConfig, total: int) -> Step:
    """``loss(net, x0)``, AdamW on the network, EMA update."""
    hp = model.hparams
    opt = torch.optim.AdamW(model.net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    schedule = make_schedule(opt, hp.lr_schedule, total, hp.warmup_steps)

    def step(batch: Any, index: int) -> None:
        descend(model.loss(model.net, images(batch)), opt)
        schedule.step()
        if model.ema is not None:
            model.ema.update(model.net)

    return step


def gpt_step(model, cfg: DictConfig, total: int) -> Step:
    """``nll(x, y)``, AdamW with decay on matrices only, clipping at ``trainer.gradient_clip_val``."""
    hp = model.hparams
    params = [p for p in model.net.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": hp.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas))
    schedule = make_schedule(opt, hp.lr_schedule, total, hp.warmup_steps, hp.final_lr_ratio)

    def step(batch: Any, index: int) -> None:
        descend(model.nll(*batch), opt, cfg.trainer.gradient_clip_val)
        schedule.step()

    return step


PLAIN = {"gan": gan_step, "vae": vae_step, "diffusion": diffusion_step, "gpt": gpt_step}


def plain_seconds(family: str, cfg: DictConfig, warmup: int, steps: int) -> float:
    """The plain loop on the model and datamodule ``cfg`` instantiates (seeded as `train` seeds)."""
    with run_dir(cfg):
        pl.seed_everything(cfg.seed, verbose=False)
        datamodule = instantiate(cfg.data, _convert_="all")
        fill_vocab_size(cfg, datamodule)
        model = instantiate(cfg.model, _convert_="all").train()
        datamodule.setup("fit")
        step = PLAIN[family](model, cfg, int(cfg.trainer.max_steps))
        return timed_loop(datamodule.train_dataloader(), step, warmup, steps)


def genlab_seconds(cfg: DictConfig, warmup: int, steps: int) -> float:
    timer = BatchTimer(warmup, warmup + steps)
    genlab_train(cfg, [timer])
    assert timer.seconds is not None, "the run ended before the timed batches"
    return timer.seconds


def bench_family(family: str, data: Path, warmup: int, steps: int, rounds: int) -> dict:
    optimizer_steps = (warmup + steps) * (2 if family == "gan" else 1)  # GAN: a D and a G step per batch
    overrides = [
        *FAMILIES[family],
        *([f"data.path={data}"] if family == "gpt" else []),
        "++trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
        "trainer.max_epochs=-1",
        f"trainer.max_steps={optimizer_steps}",
    ]
    cfg = compose_train(overrides)
    times: dict[str, list[float]] = {"plain": [], "genlab": []}
    for r in range(rounds):
        times["plain"].append(plain_seconds(family, cfg, warmup, steps))
        times["genlab"].append(genlab_seconds(cfg, warmup, steps))
        print(f"{family} round {r + 1}: plain {times['plain'][-1]:.2f} s, genlab {times['genlab'][-1]:.2f} s")
    plain, ours = steps / min(times["plain"]), steps / min(times["genlab"])
    return {
        "batch_size": cfg.data.batch_size,
        "plain_steps_per_s": round(plain, 2),
        "genlab_steps_per_s": round(ours, 2),
        "ratio": round(ours / plain, 3),
        "overhead_ms_per_batch": round(1000 * (1 / ours - 1 / plain), 2),
        "plain_seconds": [round(t, 3) for t in times["plain"]],
        "genlab_seconds": [round(t, 3) for t in times["genlab"]],
    }


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--family", choices=list(FAMILIES), help="one family (default: all)")
    parser.add_argument("--data", default=str(SHAKESPEARE), help="tiny shakespeare input.txt (gpt)")
    args = parser.parse_args()
    warmup, steps, rounds = (3, 10, 2) if args.quick else (5, 40, 5)
    families = [args.family] if args.family else list(FAMILIES)
    result: dict[str, Any] = {
        "warmup_batches": warmup,
        "timed_batches": steps,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
    }
    for family in families:
        result[family] = bench_family(family, Path(args.data), warmup, steps, rounds)
    ratios = ", ".join(f"{f} {result[f]['ratio']:.2f}" for f in families)
    name = "train_overhead" + (f"_{args.family}" if args.family else "")
    report(name, args.quick, result, f"train overhead (genlab/plain steps/s): {ratios}")


if __name__ == "__main__":
    main()
