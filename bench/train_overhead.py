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
drift. Then one interleaved run (``Interleaved``) times both sides batch by batch in one process, a plain
batch between every two of genlab's, so that drift falls on both alike (``interleaved_ratio``); it cannot see
costs outside the per-batch path that slow the whole process, which the rounds do. Besides the ratios, the
fixed cost genlab adds per batch (ms) is reported: the ratio of any other model follows from its step time.

    python bench/train_overhead.py [--family gan] [--data ../shared/data/tinyshakespeare/input.txt] [--quick]
"""

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    SHAKESPEARE,
    SHARED,
    BatchTimer,
    compose_train,
    epochs,
    genlab_train,
    run_dir,
    timed_loop,
)
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


@contextlib.contextmanager
def plain_loop(cfg: DictConfig) -> Iterator[tuple[Iterable, Step]]:
    """The plain loop's data loader and step on the model and datamodule ``cfg`` instantiates (seeded as
    `train` seeds)."""
    with run_dir(cfg):
        pl.seed_everything(cfg.seed, verbose=False)
        datamodule = instantiate(cfg.data, _convert_="all")
        fill_model_inputs(cfg, datamodule)
        model = instantiate(cfg.model, _convert_="all").train()
        datamodule.setup("fit")
        make_step = gan_step if isinstance(model, GAN) else automatic_step
        yield datamodule.train_dataloader(), make_step(model, cfg, int(cfg.trainer.max_steps))


def plain_seconds(cfg: DictConfig, warmup: int, steps: int) -> float:
    with plain_loop(cfg) as (loader, step):
        return timed_loop(loader, step, warmup, steps)


def genlab_seconds(cfg: DictConfig, warmup: int, steps: int) -> float:
    timer = BatchTimer(warmup, warmup + steps)
    genlab_train(cfg, [timer])
    assert timer.seconds is not None, "the run ended before the timed batches"
    return timer.seconds


class Interleaved(pl.Callback):
    """Runs one batch of the plain loop after each of genlab's batches, in genlab's process, and adds up
    both sides' time over batches ``warmup + 1 .. warmup + steps``: genlab's from the end of one plain batch
    to the start of the next (all of its loop, hooks, logging and data fetch), the plain loop's batches
    themselves. A drift of the host's speed, which moves whole rounds by 10-20 % here, then falls on both
    sides alike. Costs outside the main thread's per-batch path (a drawing thread, the heap) fall on both
    sides too: the alternating rounds keep measuring those."""

    def __init__(self, batches: Iterator[Any], step: Step, warmup: int, steps: int):
        self.batches, self.step, self.warmup, self.steps = batches, step, warmup, steps
        self.index, self.ended = 0, 0.0
        self.seconds = {"plain": 0.0, "genlab": 0.0}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        start = time.perf_counter()
        timed = self.warmup < self.index <= self.warmup + self.steps
        if timed:
            self.seconds["genlab"] += start - self.ended
        with torch.enable_grad():
            self.step(next(self.batches), self.index)
        self.index += 1
        self.ended = time.perf_counter()
        if timed:
            self.seconds["plain"] += self.ended - start


def interleaved_seconds(cfg: DictConfig, warmup: int, steps: int) -> dict[str, float]:
    """Both sides' seconds over the same ``steps`` batches, interleaved batch by batch (:class:`Interleaved`)."""
    with plain_loop(cfg.copy()) as (loader, step):
        pairs = Interleaved(epochs(loader), step, warmup, steps)
        genlab_train(cfg, [pairs])
    assert pairs.index > warmup + steps, "the run ended before the timed batches"
    return pairs.seconds


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
        per_batch = plain_seconds(cfg, warmup, steps) / steps
        steps = max(steps, math.ceil(seconds / per_batch))
        cfg = family_config(family, data, warmup + steps)
    times: dict[str, list[float]] = {"plain": [], "genlab": []}
    sides = {
        "plain": lambda: plain_seconds(cfg, warmup, steps),
        "genlab": lambda: genlab_seconds(cfg, warmup, steps),
    }
    for r in range(rounds):
        for side in sorted(sides, reverse=r % 2 == 1):  # alternate which side runs first: no order bias
            times[side].append(sides[side]())
        print(f"{family} round {r + 1}: plain {times['plain'][-1]:.2f} s, genlab {times['genlab'][-1]:.2f} s")
    plain, ours = steps / min(times["plain"]), steps / min(times["genlab"])
    paired = sorted(p / g for p, g in zip(times["plain"], times["genlab"]))
    pairs = interleaved_seconds(family_config(family, data, warmup + steps + 1), warmup, steps)
    print(f"{family} interleaved: plain {pairs['plain']:.2f} s, genlab {pairs['genlab']:.2f} s")
    costs = hook_costs(cfg, warmup + steps)
    return {
        "batch_size": cfg.data.batch_size,
        "timed_batches": steps,
        "plain_steps_per_s": round(plain, 2),
        "genlab_steps_per_s": round(ours, 2),
        "ratio": round(ours / plain, 3),
        "paired_ratio_median": round(paired[len(paired) // 2], 3),  # drift-robust: each round's own ratio
        "overhead_ms_per_batch": round(1000 * (1 / ours - 1 / plain), 2),
        "interleaved_ratio": round(pairs["plain"] / pairs["genlab"], 3),  # batch by batch, one process
        "interleaved_overhead_ms_per_batch": round(1000 * (pairs["genlab"] - pairs["plain"]) / steps, 2),
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
    paired = ", ".join(f"{f} {result[f]['interleaved_ratio']:.2f}" for f in families)
    name = "train_overhead" + (f"_{args.family}" if args.family else "")
    report(
        name, args.quick, result, f"train overhead (genlab/plain steps/s): {ratios}; interleaved: {paired}"
    )


if __name__ == "__main__":
    main()
