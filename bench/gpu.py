"""genlab on one GPU (an H100 or H200), in one run of about four minutes: precision, torch.compile, MFU, FID.

    bash bench/gpu.sh                       # on the GPU machine: wheels from .whl/, then this script
    python bench/gpu.py [--out bench/results/gpu.json] [--sections precision,fid,compile,mfu]
    python bench/gpu.py --device cpu --tiny --out /tmp/gpu.json    # every section, tiny, on CPU (a check)

Each section (and each training run) that fails records its error and the traceback's tail and the next
one runs; the JSON is rewritten after every row, so a run cut off still leaves what it measured, and no
run starts after --budget seconds (default 270). Sections run in this order (the compile sections last:
their compile time is the least predictable):

precision  Every family of genlab.families x trainer.precision {32, 16-mixed, bf16-mixed} (CPU: no
           16-mixed): `src/train.py`'s config (trainer=gpu, the family's default model on its quickest
           data: digits, GPT on text_docs; metrics=null, the FID weights stay home), 60 training batches,
           one validation at the end (val metric over at most 20 batches). steps_per_s: training batches
           per second over batches 11-60 (a GAN batch is a D and a G step), clocks read after a CUDA
           synchronise; train_metric: the family's last logged train scalar, and whether it is finite.
           Then one class-conditional row (data.labels=true, bf16-mixed) per family whose conf/model has
           num_classes (diffusion first), whose trained model samples with labels on the GPU: model.sample
           in fp32 and under bf16 autocast (diffusion: guided, 10 steps, ddim and dpmpp_2m), and
           `src/sample.py`'s pipeline.sample_images (per_class=2, npz); shapes, devices, finiteness.
fid        Images/s of genlab's Inception features (genlab.metrics.inception.InceptionFeatures) vs
           torch-fidelity's FeatureExtractorInceptionV3 on the same 10,000 random uint8 32x32 RGB images
           (batch 256, on the GPU before timing, one warm-up batch excluded, best of 2 alternating rounds),
           and the largest difference of their 2048-d pool features (should be ~0). Without --fid-weights
           both read a seeded random state dict in torch-fidelity's key layout: speed does not depend on
           the values.
compile    GPT shakespeare-char (nanoGPT's config: 6 layers, 6 heads, 384 dims, block 256, batch 64,
           dropout 0.2, AdamW lr 1e-3) on tiny shakespeare, bf16-mixed, genlab with model.compile=false vs
           true: tokens/s over 300 batches after 30 (compilation falls in the warm-up; run_seconds holds
           it), the last train loss and whether it is finite; the eager run's val loss over 20 batches.
mfu        The same GPT as a plain PyTorch loop in this process: the same net class
           (genlab.nets.gpt.GPT), data module, batches, fused AdamW (the module's build_optimizers),
           LR schedule and clipping, torch.autocast bf16, eager and torch.compile'd; against genlab's
           runs of `compile`. MFU = tokens/s x FLOPs per token (nanoGPT's estimate_mfu: 6N + 12 L H Q T)
           over (a) a bf16 8192^3 matmul measured here (mean of 10 after 3 warm-ups) and (b) the
           datasheet's dense bf16 989.5 TFLOP/s of an H100/H200 SXM.
           Reference, nanoGPT's README for this config: "On one A100 GPU this training run takes about 3
           minutes" for 5000 iterations: ~36 ms/iteration, ~450k tokens/s, evaluations included.

Data: digits and text_docs ship with scikit-learn and Python; tiny shakespeare from --shakespeare
(default $GENLAB_SHARED/data/tinyshakespeare/input.txt).
"""

import argparse
import gc
import json
import logging
import os
import platform
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, SHAKESPEARE, BatchTimer, compose_train, genlab_train, run_dir, timed_loop  # noqa: E402
from train_overhead import descend, optimizers  # noqa: E402

from genlab.families import FAMILIES  # noqa: E402
from genlab.pipeline import fill_model_inputs  # noqa: E402

DATASHEET_BF16 = 989.5e12  # H100 / H200 SXM, dense bf16 (FLOP/s)
NANOGPT_A100_TOKENS_PER_S = 5000 * 64 * 256 / 180  # README: 5000 iterations in "about 3 minutes"


class Sizes:
    """Warm-up and timed batches, and the other sizes: full (GPU) or --tiny (a CPU check of the script)."""

    def __init__(self, tiny: bool):
        self.tiny = tiny
        self.warmup, self.timed = (2, 3) if tiny else (10, 50)  # precision rows
        self.val_batches = 2 if tiny else 20
        self.gpt_warmup, self.gpt_timed = (3, 10) if tiny else (30, 300)
        self.fid_images, self.fid_batch = (16, 8) if tiny else (10_000, 256)
        self.matmul = 1024 if tiny else 8192


# ---- helpers ----
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SyncedTimer(BatchTimer):
    """BatchTimer whose two clock reads first wait for the GPU's queued work (CUDA runs ahead of the host)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.batches + 1 in (self.start, self.stop) and torch.cuda.is_available():
            torch.cuda.synchronize()
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


class KeepModule(pl.Callback):
    """Keeps the trained LightningModule (genlab_train returns only metrics)."""

    def on_fit_end(self, trainer, pl_module) -> None:
        self.module = pl_module


def failure(err: BaseException) -> dict:
    return {"error": f"{type(err).__name__}: {err}"[:2000], "traceback": traceback.format_exc()[-3000:]}


def guarded(fn: Callable[[], dict]) -> dict:
    """``fn()``, or its error and traceback tail; the GPU's memory is freed either way."""
    start = time.perf_counter()
    try:
        result = fn()
    except Exception as err:  # recorded; the next row or section runs
        result = failure(err)
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    result["wall_seconds"] = round(time.perf_counter() - start, 2)
    return result


def finite(value: Any) -> bool | None:
    return None if value is None else bool(torch.isfinite(torch.as_tensor(value)).all())


def rounded(value: Any, digits: int = 4) -> Any:
    return None if value is None else round(float(value), digits)


def peak_memory_gib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def timed_genlab(cfg: DictConfig, warmup: int, timed: int, keep: KeepModule | None = None) -> dict:
    """`src/train.py` on ``cfg`` in this process: batches/s over ``timed`` batches after ``warmup``, and
    its final metrics."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    timer = SyncedTimer(warmup, warmup + timed)
    start = time.perf_counter()
    metrics = genlab_train(cfg, [timer, *([keep] if keep else [])])
    if timer.seconds is None:
        raise RuntimeError(f"the run ended before batch {warmup + timed}: {metrics}")
    return {
        "steps_per_s": round(timed / timer.seconds, 2),
        "run_seconds": round(time.perf_counter() - start, 2),
        "peak_memory_gib": peak_memory_gib(),
        "metrics": {k: rounded(v) for k, v in metrics.items()},
    }


# ---- 1. precision matrix ----
TINY = {"diffusion": ("data.resolution=16",), "gpt": ("callbacks.text_samples.max_new_tokens=16",)}  # --tiny
TINY_OFF = ("sample_accuracy",)  # callbacks that --tiny leaves out where the config has them (minutes on CPU)


def precision_overrides(args, sizes: Sizes, family: str, precision: str) -> list[str]:
    fam = FAMILIES[family]
    batches = sizes.warmup + sizes.timed
    tiny = [*fam.small, *TINY.get(family, ()), "data.batch_size=8", "trainer.log_every_n_steps=1"]
    callbacks = OmegaConf.load(ROOT / "conf/callbacks/default.yaml")
    tiny += [f"callbacks.{name}=null" for name in TINY_OFF if name in callbacks]
    return [
        f"trainer={args.trainer}",
        f"model={family}",
        *fam.data,
        *(tiny if sizes.tiny else ()),
        f"trainer.precision={precision}",
        "metrics=null",
        "trainer.max_epochs=-1",
        f"trainer.max_steps={batches * fam.steps_per_batch}",
        f"trainer.val_check_interval={batches}",  # one validation, after the last batch
        "trainer.check_val_every_n_epoch=null",
        f"++trainer.limit_val_batches={sizes.val_batches}",
        "trainer.num_sanity_val_steps=0",
        "++trainer.enable_model_summary=false",
    ]


def precision_row(
    args, sizes: Sizes, family: str, precision: str, extra: tuple[str, ...] = (), keep=None
) -> dict:
    fam = FAMILIES[family]
    cfg = compose_train([*precision_overrides(args, sizes, family, precision), *extra])
    row = timed_genlab(cfg, sizes.warmup, sizes.timed, keep)
    train, val = row["metrics"].get(fam.train_metric), row["metrics"].get(fam.val_metric)
    return {
        "family": family,
        "precision": precision,
        **row,
        "train_metric": fam.train_metric,
        "train_value": train,
        "train_finite": finite(train),
        "val_metric": fam.val_metric,
        "val_value": val,
        "val_finite": finite(val),
    }


def conditional_families() -> list[str]:
    """Families whose model config has ``num_classes`` (conditional on labelled data), diffusion first."""
    names = sorted(FAMILIES, key=lambda name: name != "diffusion")
    return [n for n in names if "num_classes" in OmegaConf.load(ROOT / f"conf/model/{n}.yaml")]


def conditional_row(args, sizes: Sizes, family: str) -> dict:
    """A class-conditional run on labelled digits (bf16-mixed), then its model samples with labels on the
    device: ``model.sample`` in fp32 and under bf16 autocast (diffusion: guided, 10 steps, each fast
    sampler), and `src/sample.py`'s ``pipeline.sample_images`` with per_class=2 (npz; tiny: 1)."""
    from genlab.pipeline import sample_images

    keep = KeepModule()
    row = precision_row(args, sizes, family, "bf16-mixed", ("data.labels=true",), keep)
    model = keep.module.to(args.device).eval()
    classes, takes = int(model.hparams.num_classes), set(model.sample_options)
    per_class = 1 if sizes.tiny else 2
    labels = torch.arange(per_class * classes) % classes
    steps = {"steps": 10} if "steps" in takes else {}
    variants = {"fp32": ({}, False), "bf16_autocast": ({}, True)}
    if "sampler" in takes:
        variants["dpmpp_2m"] = ({"sampler": "dpmpp_2m"}, False)
    samples = {}
    for name, (options, autocast) in variants.items():
        start = time.perf_counter()
        with torch.autocast(args.device.type, torch.bfloat16, enabled=autocast):
            images = model.sample(
                len(labels), torch.Generator().manual_seed(0), labels=labels, **steps, **options
            )
        synchronize(args.device)
        samples[name] = {
            "shape": list(images.shape),
            "device": str(images.device),
            "finite": finite(images),
            "min": rounded(images.min()),
            "max": rounded(images.max()),
            "seconds": round(time.perf_counter() - start, 3),
        }
    with tempfile.TemporaryDirectory() as out:  # sample.py's path: one grid row per class, npz
        options = {"num_samples": 20, "batch_size": 16, "nrow": 8, "format": "npz", "per_class": per_class}
        options.update({k: None for k in ("sampler", "steps", "guidance", "labels")}, **steps)
        if "guidance" in takes:
            options["guidance"] = 3.0
        sample_images(OmegaConf.create(options), model, torch.Generator().manual_seed(0), Path(out))
        written = sorted(p.name for p in Path(out).iterdir())
        pixels = np.load(Path(out) / "samples.npz")["images"]
    return {
        **row,
        "num_classes": classes,
        "guidance": model.hparams.get("guidance"),
        "samples": samples,
        "sample_images": {"files": written, "shape": list(pixels.shape), "dtype": str(pixels.dtype)},
    }


def section_precision(args, sizes: Sizes, results: dict, save: Callable[[], None]) -> dict:
    precisions = ["32", "16-mixed", "bf16-mixed"] if args.device.type == "cuda" else ["32", "bf16-mixed"]
    section: dict[str, Any] = {"precisions": precisions, "rows": [], "conditional": []}
    results["precision"] = section
    runs = [(family, precision, False) for family in FAMILIES for precision in precisions]
    runs += [(family, "bf16-mixed", True) for family in conditional_families()]
    for family, precision, conditional in runs:
        row = {"family": family, "precision": precision, "conditional": conditional}
        if over_budget(args):
            row["skipped"] = "time budget"
        elif conditional:
            row.update(guarded(lambda f=family: conditional_row(args, sizes, f)))
        else:
            row.update(guarded(lambda f=family, p=precision: precision_row(args, sizes, f, p)))
        section["conditional" if conditional else "rows"].append(row)
        print(precision_line(row), flush=True)
        save()
    return section


def precision_line(row: dict) -> str:
    head = f"  {row['family'] + (' cond.' if row['conditional'] else ''):15s} {row['precision']:10s}"
    if "steps_per_s" not in row:
        return f"{head} {row.get('skipped') or row.get('error')}"
    samples = {name: sample["finite"] for name, sample in row.get("samples", {}).items()}
    sampled = f"  samples finite: {samples}" if samples else ""
    return (
        f"{head} {row['steps_per_s']:8.2f} steps/s  {row['train_metric']} {row['train_value']} "
        f"(finite {row['train_finite']})  {row['val_metric']} {row['val_value']}  "
        f"[{row['run_seconds']} s]{sampled}"
    )


# ---- 2. and 3. GPT: torch.compile, and MFU against a plain loop ----
def gpt_cfg(args, sizes: Sizes, compile: bool, val_batches: int = 0) -> DictConfig:
    """experiment=gpt_shakespeare_char (nanoGPT's shakespeare_char) on the GPU, bf16-mixed, for the bench's
    batches; tiny: the family's smallest GPT, batch 8."""
    batches = sizes.gpt_warmup + sizes.gpt_timed
    tiny = [*FAMILIES["gpt"].small, "data.batch_size=8", "trainer.log_every_n_steps=1"] if sizes.tiny else []
    return compose_train(
        [
            "experiment=gpt_shakespeare_char",
            f"trainer={args.trainer}",
            f"data.path={args.shakespeare}",
            "trainer.precision=bf16-mixed",
            f"model.compile={str(compile).lower()}",
            *tiny,
            f"trainer.max_steps={batches}",
            f"trainer.val_check_interval={batches}",
            f"++trainer.limit_val_batches={val_batches}",
            "trainer.num_sanity_val_steps=0",
            "++trainer.enable_model_summary=false",
            "callbacks.text_samples=null",  # generation with a compiled net recompiles per length
        ]
    )


def tokens_per_batch(cfg: DictConfig) -> int:
    return int(cfg.data.batch_size) * int(cfg.data.block_size)


def genlab_gpt(args, sizes: Sizes, compile: bool, val_batches: int = 0) -> dict:
    cfg = gpt_cfg(args, sizes, compile, val_batches)
    row = timed_genlab(cfg, sizes.gpt_warmup, sizes.gpt_timed)
    loss = row["metrics"].get("train/loss")
    return {
        "compile": compile,
        "tokens_per_s": round(row["steps_per_s"] * tokens_per_batch(cfg)),
        **row,
        "train_loss": loss,
        "train_finite": finite(loss),
        "val_loss": row["metrics"].get("val/loss"),
    }


def plain_gpt(args, sizes: Sizes, compile: bool) -> dict:
    """nanoGPT's loop on genlab's GPT without Lightning: the model and data module `cfg` instantiates (seeded
    as `train` seeds), bf16 autocast, the module's own optimizer (fused AdamW on CUDA) and LR schedule, norm
    clipping at trainer.gradient_clip_val; clocks read after a CUDA synchronise."""
    cfg = gpt_cfg(args, sizes, compile)
    warmup, timed, device = sizes.gpt_warmup, sizes.gpt_timed, args.device
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with run_dir(cfg):
        pl.seed_everything(cfg.seed, verbose=False)
        datamodule = instantiate(cfg.data, _convert_="all")
        fill_model_inputs(cfg, datamodule)
        model = instantiate(cfg.model, _convert_="all").to(device).train()  # model.compile: net compiled
        datamodule.setup("fit")
        ((opt, schedule),) = optimizers(model, warmup + timed)
        clip, last = cfg.trainer.gradient_clip_val, []

        def step(batch: Any, index: int) -> None:
            batch = [t.to(device, non_blocking=True) for t in batch]
            with torch.autocast(device.type, torch.bfloat16):
                loss = model.training_loss(batch, index)[0]
            descend(loss, opt, clip)
            schedule.step()
            last[:] = [loss.detach()]
            if index + 1 in (warmup, warmup + timed):
                synchronize(device)

        seconds = timed_loop(datamodule.train_dataloader(), step, warmup, timed)
    loss = last[0].item()
    return {
        "compile": compile,
        "tokens_per_s": round(timed / seconds * tokens_per_batch(cfg)),
        "steps_per_s": round(timed / seconds, 2),
        "run_seconds": round(time.perf_counter() - start, 2),
        "peak_memory_gib": peak_memory_gib(),
        "train_loss": round(loss, 4),
        "train_finite": finite(loss),
        "optimizer": f"{type(opt).__name__}(fused={opt.defaults.get('fused')})",
    }


def section_compile(args, sizes: Sizes) -> dict:
    result = {}
    for name, compile, val_batches in (
        ("genlab_eager", False, sizes.val_batches),
        ("genlab_compiled", True, 0),
    ):
        result[name] = guarded(lambda c=compile, v=val_batches: genlab_gpt(args, sizes, c, v))
        print(f"  {name:16s} {gpt_line(result[name])}", flush=True)
    eager, compiled = (result[k].get("tokens_per_s") for k in ("genlab_eager", "genlab_compiled"))
    result["speedup_compiled_over_eager"] = round(compiled / eager, 3) if eager and compiled else None
    cfg = gpt_cfg(args, sizes, False)
    result.update(
        batch=int(cfg.data.batch_size), block=int(cfg.data.block_size), timed_batches=sizes.gpt_timed
    )
    return result


def gpt_line(row: dict) -> str:
    if "tokens_per_s" not in row:
        return str(row.get("skipped") or row.get("error"))
    val = f", val loss {row['val_loss']}" if row.get("val_loss") is not None else ""
    return (
        f"{row['tokens_per_s']:>9,} tokens/s ({row['steps_per_s']} steps/s), train loss {row['train_loss']} "
        f"(finite {row['train_finite']}){val}  [{row['run_seconds']} s]"
    )


def flops_per_token(cfg: DictConfig) -> tuple[int, int]:
    """(non-embedding parameters N, nanoGPT's estimate_mfu FLOPs per token 6N + 12 L H Q T) of cfg's GPT."""
    from genlab.nets.gpt import GPT

    with run_dir(cfg):
        datamodule = instantiate(cfg.data, _convert_="all")
        vocab = datamodule.vocab_size
    net = cfg.model.net
    n = GPT(vocab, int(net.block_size), int(net.n_layer), int(net.n_head), int(net.n_embd)).num_params()
    layers, heads, head_dim = int(net.n_layer), int(net.n_head), int(net.n_embd) // int(net.n_head)
    return n, 6 * n + 12 * layers * heads * head_dim * int(cfg.data.block_size)


def matmul_peak(
    device: torch.device, n: int, dtype: torch.dtype, warmup: int = 3, repeats: int = 10
) -> float:
    """FLOP/s (2 n^3 per product) of an n x n @ n x n product on random data: the mean of ``repeats``
    after ``warmup``."""
    generator = torch.Generator(device).manual_seed(0)
    a, b = (torch.randn(n, n, device=device, dtype=dtype, generator=generator) for _ in range(2))
    for _ in range(warmup):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def section_mfu(args, sizes: Sizes, results: dict) -> dict:
    dtype = torch.bfloat16 if args.device.type == "cuda" else torch.float32
    peak = matmul_peak(args.device, sizes.matmul, dtype)
    params, flops = flops_per_token(gpt_cfg(args, sizes, True))
    result: dict[str, Any] = {
        "matmul": f"{sizes.matmul}^3 {str(dtype).removeprefix('torch.')}",
        "matmul_tflops": round(peak / 1e12, 1),
        "datasheet_bf16_tflops": DATASHEET_BF16 / 1e12,
        "non_embedding_params": params,
        "flops_per_token": flops,
        "nanogpt_a100_tokens_per_s": round(NANOGPT_A100_TOKENS_PER_S),
    }
    done = results.get("compile", {})  # genlab's runs of section compile, else run here
    sides = {
        "genlab_compiled": lambda: genlab_gpt(args, sizes, True),
        "plain_compiled": lambda: plain_gpt(args, sizes, True),
        "genlab_eager": lambda: genlab_gpt(args, sizes, False),
        "plain_eager": lambda: plain_gpt(args, sizes, False),
    }
    for name, run in sides.items():
        if "tokens_per_s" in done.get(name, {}):
            result[name] = row = dict(done[name], measured_in="compile")
        else:
            result[name] = row = {"skipped": "time budget"} if over_budget(args) else guarded(run)
        if "tokens_per_s" in row:
            row["mfu_measured_peak"] = round(row["tokens_per_s"] * flops / peak, 4)
            row["mfu_datasheet"] = round(row["tokens_per_s"] * flops / DATASHEET_BF16, 4)
        print(f"  {name:16s} {mfu_line(result[name])}", flush=True)
    for mode in ("compiled", "eager"):
        ours, plain = (result[f"{side}_{mode}"].get("tokens_per_s") for side in ("genlab", "plain"))
        result[f"ratio_genlab_over_plain_{mode}"] = round(ours / plain, 3) if ours and plain else None
    return result


def mfu_line(row: dict) -> str:
    if "mfu_datasheet" not in row:
        return gpt_line(row)
    return (
        f"{row['tokens_per_s']:>9,} tokens/s  MFU {row['mfu_measured_peak']:.1%} of measured peak, "
        f"{row['mfu_datasheet']:.1%} of datasheet"
    )


# ---- 4. FID features: genlab vs torch-fidelity ----
def random_inception_weights(folder: Path) -> Path:
    """A seeded state dict in the key layout of torch-fidelity's FID InceptionV3 (the real 92 MB file stays
    home): He-normal convolutions, so activations keep their scale through the network; a random
    classifier layer."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Blank(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # keep the fresh modules
            return None

    torch.save({}, folder / "empty.pth")
    net = Blank("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(folder / "empty.pth"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.normal_(0, (2 / module.weight[0].numel()) ** 0.5, generator=generator)
        net.fc.weight.normal_(0, 0.05, generator=generator)
        net.fc.bias.normal_(0, 0.1, generator=generator)
    torch.save(net.state_dict(), folder / "inception_random.pth")
    return folder / "inception_random.pth"


def section_fid(args, sizes: Sizes) -> dict:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from genlab.metrics.inception import InceptionFeatures

    device, n, batch = args.device, sizes.fid_images, sizes.fid_batch
    with tempfile.TemporaryDirectory() as folder:
        weights = Path(args.fid_weights) if args.fid_weights else random_inception_weights(Path(folder))
        ours = InceptionFeatures(weights).to(device)
        reference = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights)
        ).to(device)
    images = torch.randint(
        0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    images = images.to(device)
    extractors = {"genlab": ours, "torch_fidelity": lambda x: reference(x)[0]}

    @torch.no_grad()
    def run(extract) -> tuple[float, torch.Tensor]:
        extract(images[:batch].clone())  # warm-up: cuDNN handles and kernels
        synchronize(device)
        start = time.perf_counter()
        features = torch.cat([extract(images[i : i + batch]) for i in range(0, n, batch)])
        synchronize(device)
        return n / (time.perf_counter() - start), features

    rates: dict[str, list[float]] = {name: [] for name in extractors}
    features = {}
    for _ in range(1 if sizes.tiny else 2):  # alternating rounds, best of each
        for name, extract in extractors.items():
            rate, features[name] = run(extract)
            rates[name].append(rate)
    diff = (features["genlab"] - features["torch_fidelity"]).abs().max().item()
    scale = features["torch_fidelity"].abs().max().item()
    best = {name: max(r) for name, r in rates.items()}
    return {
        "images": n,
        "batch": batch,
        "weights": str(args.fid_weights) if args.fid_weights else "random (seeded), torch-fidelity's layout",
        "genlab_images_per_s": round(best["genlab"], 1),
        "torch_fidelity_images_per_s": round(best["torch_fidelity"], 1),
        "ratio_genlab_over_torch_fidelity": round(best["genlab"] / best["torch_fidelity"], 3),
        "rounds_images_per_s": {name: [round(r, 1) for r in rs] for name, rs in rates.items()},
        "feature_max_abs_diff": float(f"{diff:.3e}"),
        "feature_max_abs": round(scale, 4),
        "features_finite": finite(features["genlab"]),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
    }


# ---- the run ----
def over_budget(args) -> bool:
    return time.perf_counter() - args.started > args.budget


def meta(args) -> dict:
    import lightning_fabric
    import torchmetrics

    cuda = args.device.type == "cuda"
    return {
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        if cuda
        else None,
        "tiny": args.tiny,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "pytorch_lightning": pl.__version__,
        "lightning_fabric": lightning_fabric.__version__,
        "torchmetrics": torchmetrics.__version__,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cpu_threads": torch.get_num_threads(),
        "shakespeare": str(args.shakespeare),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


SECTIONS = ("precision", "fid", "compile", "mfu")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=str(ROOT / "bench/results/gpu.json"), help="result JSON")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument(
        "--tiny", action="store_true", help="tiny sizes and steps (a CPU check of the script)"
    )
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {SECTIONS}")
    parser.add_argument("--shakespeare", default=str(SHAKESPEARE), help="tiny shakespeare input.txt")
    parser.add_argument("--fid-weights", help="the real FID Inception weights (default: seeded random ones)")
    parser.add_argument(
        "--budget", type=float, help="seconds after which no new row starts (default 270, tiny: none)"
    )
    args = parser.parse_args()
    args.started = time.perf_counter()
    args.budget = args.budget or (float("inf") if args.tiny else 270)
    args.device = torch.device(args.device)
    args.trainer = "gpu" if args.device.type == "cuda" else "cpu"
    if args.device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("CUDA is not available: run with --device cpu --tiny for a check of the script")
    for message in (".*does not have many workers.*", ".*Tensor Cores.*", ".*LeafSpec.*"):
        warnings.filterwarnings("ignore", message=message)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning_fabric").setLevel(logging.WARNING)
    sizes, out = Sizes(args.tiny), Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"meta": meta(args)}

    def save() -> None:
        results["meta"]["elapsed_seconds"] = round(time.perf_counter() - args.started, 1)
        out.with_suffix(".tmp").write_text(json.dumps(results, indent=2))
        os.replace(out.with_suffix(".tmp"), out)

    print(json.dumps(results["meta"]), flush=True)
    runs = {
        "precision": lambda: section_precision(args, sizes, results, save),
        "fid": lambda: section_fid(args, sizes),
        "compile": lambda: section_compile(args, sizes),
        "mfu": lambda: section_mfu(args, sizes, results),
    }
    for name in [s for s in SECTIONS if s in args.sections.split(",")]:
        print(f"== {name} (at {time.perf_counter() - args.started:.0f} s)", flush=True)
        late = over_budget(args) and name != "mfu"  # mfu skips its runs alone: the peak and FLOPs are cheap
        results[name] = {"skipped": "time budget"} if late else guarded(runs[name])
        if "error" in results[name]:
            print(f"  FAILED: {results[name]['error']}\n{results[name]['traceback']}", flush=True)
        save()
    summary(results)


def summary(results: dict) -> None:
    print(f"== summary ({results['meta']['device']}, {results['meta']['elapsed_seconds']} s)")
    precision = results.get("precision", {})
    for row in precision.get("rows", []) + precision.get("conditional", []):
        ok = row.get("train_finite") is not False and row.get("val_finite") is not False
        ok = ok and all(s["finite"] for s in row.get("samples", {}).values())
        state = "FAILED" if "error" in row else row.get("skipped") or ("ok" if ok else "NOT FINITE")
        print(
            f"precision {row['family']}{' cond.' if row['conditional'] else ''} {row['precision']}: "
            f"{row.get('steps_per_s')} steps/s, {state}"
        )
    if fid := results.get("fid"):
        print(
            f"fid features: genlab {fid.get('genlab_images_per_s')} vs torch-fidelity "
            f"{fid.get('torch_fidelity_images_per_s')} images/s, max |diff| {fid.get('feature_max_abs_diff')}"
            + (f"  {fid['error']}" if "error" in fid else "")
        )
    if comp := results.get("compile"):
        print(f"gpt compile speed-up (genlab, bf16-mixed): {comp.get('speedup_compiled_over_eager')}")
    if mfu := results.get("mfu"):
        for side in ("genlab_compiled", "plain_compiled", "genlab_eager", "plain_eager"):
            if side in mfu:
                print(f"gpt {side:16s} {mfu_line(mfu[side])}")
        print(
            f"gpt genlab/plain tokens/s: compiled {mfu.get('ratio_genlab_over_plain_compiled')}, eager "
            f"{mfu.get('ratio_genlab_over_plain_eager')} (matmul peak {mfu.get('matmul_tflops')} TFLOP/s; "
            f"nanoGPT A100 ~{mfu.get('nanogpt_a100_tokens_per_s')} tokens/s)"
        )


if __name__ == "__main__":
    main()
