"""Training overhead per family: steps/s of `src/train.py` vs a plain PyTorch loop, same networks and data.

For each family of ``genlab.families`` (image families on MNIST with their ``bench`` overrides, e.g. the
default GAN and VAE and a narrow diffusion UNet at 16 px; the GPT as experiment=gpt_shakespeare_char_cpu)
the real `train` config is composed in this process. genlab trains it with its default logger (csv),
callbacks (checkpointing, lr monitor, divergence guard, ...) and progress bar, validation off. The plain
loop instantiates the same model and datamodule from that config and does each batch's math by calling
the module's own methods (``training_loss``, ``update_averages``; the GAN's D and G losses), with the
optimizers and LR schedules of its own ``build_optimizers``. The sides alternate for several
rounds, each round in the opposite order to the last; the best time of each is compared over the same
batches after a warm-up: a window of about 8 s of the plain loop (at least 40 batches), so a fast model's
ratio is not a second's noise. The median of the rounds' own ratios is reported beside it: on a shared 2-core
machine the host's speed drifts by several percent between rounds, and a pair of adjacent runs shares the
drift. Besides the ratio, the fixed cost genlab adds per batch (ms) is reported: the ratio of any other model
follows from its step time.

    python bench/train_overhead.py [--family gan] [--data ../shared/data/tinyshakespeare/input.txt] [--quick]
"""

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHAKESPEARE, SHARED, BatchTimer, compose_train, genlab_train, run_dir, timed_loop  # noqa: E402
from _results import bench_parser, report  # noqa: E402

from genlab.families import FAMILIES  # noqa: E402
from genlab.models.gan import GAN  # noqa: E402
from genlab.pipeline import fill_model_inputs  # noqa: E402
from genlab.utils.step_cost import remember_no_cuda  # noqa: E402

# MNIST (469 batches an epoch): the timed window holds no epoch end, whose checkpoint writes are per epoch.
IMAGES = [
    "trainer=cpu",
    "data=mnist",
    f"data.root={SHARED / 'data'}",
    "metrics=null",
    "optimized_metric=null",
]
Step = Callable[[Any, int], None]


def overrides(name: str) -> list[str]:
    """The family's benchmark model (genlab.families): image families on MNIST, text as its experiment."""
    family = FAMILIES[name]
    data = IMAGES if family.modality == "image" else []
    return [*data, f"model={name}", *family.bench]


def descend(loss: torch.Tensor, opt: torch.optim.Optimizer, clip: float | None = None) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], clip)
    opt.step()


def optimizers(model, total: int) -> list[tuple[torch.optim.Optimizer, Any]]:
    """The module's own optimizers and LR schedules (``build_optimizers``), as the Trainer gets them."""
    return [(c["optimizer"], c["lr_scheduler"]["scheduler"]) for c in model.build_optimizers(total)]


def gan_step(model: GAN, cfg: DictConfig, total: int) -> Step:
    """D step on detached fakes (G frozen), then G step (D frozen), EMA of G: GAN.training_step's calls."""
    (opt_g, sched_g), (opt_d, sched_d) = optimizers(model, total)

    def step(batch: Any, index: int) -> None:
        real = model.inputs(batch)
        model.generator.requires_grad_(False)
        descend(model.discriminator_loss(real)[0], opt_d)
        model.generator.requires_grad_(True)
        if model.generator_steps(index):
            model.discriminator.requires_grad_(False)
            descend(model.generator_loss(real.shape[0]), opt_g)
            model.discriminator.requires_grad_(True)
            model.update_averages()
        sched_g.step()
        sched_d.step()

    return step


def automatic_step(model, cfg: DictConfig, total: int) -> Step:
    """``training_loss`` at the step's index, backward, clipping at ``trainer.gradient_clip_val``, the
    optimizer and schedule step, then EMA updates: what Lightning's automatic optimization does."""
    ((opt, schedule),) = optimizers(model, total)

    def step(batch: Any, index: int) -> None:
        descend(model.training_loss(batch, index)[0], opt, cfg.trainer.gradient_clip_val)
        schedule.step()
        model.update_averages()

    return step


def plain_seconds(family: str, cfg: DictConfig, warmup: int, steps: int) -> float:
    """The plain loop on the model and datamodule ``cfg`` instantiates (seeded as `train` seeds)."""
    with run_dir(cfg):
        pl.seed_everything(cfg.seed, verbose=False)
        datamodule = instantiate(cfg.data, _convert_="all")
        fill_model_inputs(cfg, datamodule)
        model = instantiate(cfg.model, _convert_="all").train()
        datamodule.setup("fit")
        make_step = gan_step if isinstance(model, GAN) else automatic_step
        step = make_step(model, cfg, int(cfg.trainer.max_steps))
        return timed_loop(datamodule.train_dataloader(), step, warmup, steps)


def genlab_seconds(cfg: DictConfig, warmup: int, steps: int) -> float:
    timer = BatchTimer(warmup, warmup + steps)
    genlab_train(cfg, [timer])
    assert timer.seconds is not None, "the run ended before the timed batches"
    return timer.seconds


class KeepProfiler(pl.Callback):
    def on_fit_end(self, trainer, pl_module) -> None:
        self.profiler = trainer.profiler


MATH = (
    "training_step",
    "backward",
    "optimizer_step",
    "optimizer_zero_grad",
    "run_training_batch",
)  # the model's work
PER_BATCH = (
    "batch",
    "backward",
    "optimizer",
    "zero_grad",
    "gradient_clipping",
    "dataloader_next",
)  # hook names


def hook_costs(cfg: DictConfig, batches: int) -> dict[str, float]:
    """Where genlab's fixed per-batch cost goes: ms per batch of every callback and module hook outside the
    model's own math (Lightning's SimpleProfiler on one more run), largest first."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.trainer.profiler = {"_target_": "pytorch_lightning.profilers.SimpleProfiler"}
    keep = KeepProfiler()
    genlab_train(cfg, [keep])
    costs = {
        action: 1000 * sum(durations) / batches
        for action, durations in keep.profiler.recorded_durations.items()
        if any(k in action for k in PER_BATCH) and action.rsplit(".", 1)[-1] not in MATH
    }
    return {a: round(ms, 3) for a, ms in sorted(costs.items(), key=lambda kv: -kv[1]) if ms >= 0.02}


def family_config(family: str, data: Path, batches: int) -> DictConfig:
    """The family's train config for ``batches`` batches, validation off."""
    return compose_train(
        [
            *overrides(family),
            *([f"data.path={data}"] if FAMILIES[family].modality == "text" else []),
            "++trainer.limit_val_batches=0",
            "trainer.num_sanity_val_steps=0",
            "trainer.max_epochs=-1",
            f"trainer.max_steps={batches * FAMILIES[family].steps_per_batch}",
        ]
    )


def bench_family(family: str, data: Path, warmup: int, steps: int, rounds: int, seconds: float = 0.0) -> dict:
    """Alternating rounds of both sides. With ``seconds``, the timed window is first stretched to about that
    long on the plain side (at least ``steps`` batches), so fast and slow models are timed alike."""
    cfg = family_config(family, data, warmup + steps)
    if seconds:
        per_batch = plain_seconds(family, cfg, warmup, steps) / steps
        steps = max(steps, math.ceil(seconds / per_batch))
        cfg = family_config(family, data, warmup + steps)
    times: dict[str, list[float]] = {"plain": [], "genlab": []}
    sides = {
        "plain": lambda: plain_seconds(family, cfg, warmup, steps),
        "genlab": lambda: genlab_seconds(cfg, warmup, steps),
    }
    for r in range(rounds):
        for side in sorted(sides, reverse=r % 2 == 1):  # alternate which side runs first: no order bias
            times[side].append(sides[side]())
        print(f"{family} round {r + 1}: plain {times['plain'][-1]:.2f} s, genlab {times['genlab'][-1]:.2f} s")
    plain, ours = steps / min(times["plain"]), steps / min(times["genlab"])
    paired = sorted(p / g for p, g in zip(times["plain"], times["genlab"]))
    costs = hook_costs(cfg, warmup + steps)
    return {
        "batch_size": cfg.data.batch_size,
        "timed_batches": steps,
        "plain_steps_per_s": round(plain, 2),
        "genlab_steps_per_s": round(ours, 2),
        "ratio": round(ours / plain, 3),
        "paired_ratio_median": round(paired[len(paired) // 2], 3),  # drift-robust: each round's own ratio
        "overhead_ms_per_batch": round(1000 * (1 / ours - 1 / plain), 2),
        "plain_seconds": [round(t, 3) for t in times["plain"]],
        "genlab_seconds": [round(t, 3) for t in times["genlab"]],
        "hook_ms_per_batch": costs,  # the named parts of the overhead (whole run, incl. start-up hooks)
    }


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--family", choices=list(FAMILIES), help="one family (default: all)")
    parser.add_argument("--data", default=str(SHAKESPEARE), help="tiny shakespeare input.txt (gpt)")
    args = parser.parse_args()
    remember_no_cuda()  # a plain loop without Lightning imported never probes NVML per step (genlab neither)
    warmup, steps, rounds, seconds = (3, 10, 1, 0.0) if args.quick else (5, 40, 7, 8.0)
    families = [args.family] if args.family else list(FAMILIES)
    result: dict[str, Any] = {
        "warmup_batches": warmup,
        "min_timed_batches": steps,
        "timed_seconds": seconds,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
    }
    for family in families:
        result[family] = bench_family(family, Path(args.data), warmup, steps, rounds, seconds)
    ratios = ", ".join(f"{f} {result[f]['ratio']:.2f}" for f in families)
    name = "train_overhead" + (f"_{args.family}" if args.family else "")
    report(name, args.quick, result, f"train overhead (genlab/plain steps/s): {ratios}")


if __name__ == "__main__":
    main()
