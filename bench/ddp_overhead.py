"""What DDP's unused-parameter search costs: steps/s of 2-process DDP (gloo, CPU) with
``find_unused_parameters`` on vs off, for the families that do not need it (VAE, diffusion, GPT).

genlab lets each model declare whether DDP must search the autograd graph for parameters without
gradients; only the GAN does (its D step never reaches G). This measures what the others save by
skipping the search, and so what the GAN pays for it, per step of a model of that size. Each side is
``python src/train.py model=<family> trainer=ddp_cpu +trainer.strategy.find_unused_parameters=<on|off>``;
the sides alternate for several rounds and the best time of each is compared.

    python bench/ddp_overhead.py [--quick]

Writes bench/results/ddp_overhead[_quick].json and prints the mean time ratio (on / off) last.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _results import bench_parser, report
from _step_probe import ENV

ROOT = Path(__file__).resolve().parents[1]
COMMON = [
    "trainer=ddp_cpu",
    "trainer.min_epochs=0",
    "trainer.max_epochs=100",
    "trainer.num_sanity_val_steps=0",
    "+trainer.limit_val_batches=0",
    "metrics=null",
    "optimized_metric=null",
    "callbacks.progress_bar=null",
    "+callbacks.step_probe._target_=_step_probe.StepTimer",
]
FAMILIES = {  # the default networks at 32 px (digits), and a 4-layer GPT
    "vae": ["model=vae"],
    "diffusion": ["model=diffusion", "data.batch_size=16"],
    "gpt": [
        "model=gpt",
        "data=text_docs",
        "model.net.n_layer=4",
        "model.net.n_embd=128",
        "model.net.n_head=4",
        "data.block_size=64",
        "data.batch_size=12",
        "callbacks.text_samples=null",
    ],
}
QUICK = {"vae": ["model=vae", "model.encoder.width=8", "model.decoder.width=8"]}


def seconds(family_args: list[str], find_unused: bool, batches: int, tmp: Path) -> float:
    """Rank 0's wall time of ``batches`` training batches after 5 warm-up batches."""
    probe = tmp / "probe"
    probe.unlink(missing_ok=True)
    env = {
        **os.environ,
        ENV: str(probe),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "bench"), os.environ.get("PYTHONPATH")])),
        "GENLAB_CACHE": str(tmp / "cache"),
    }
    cmd = [
        sys.executable, "src/train.py", *COMMON, *family_args,
        f"+trainer.strategy.find_unused_parameters={str(find_unused).lower()}",
        f"+callbacks.step_probe.stop={5 + batches}", f"hydra.run.dir={tmp / 'run'}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode or not probe.is_file():
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return float(probe.read_text())


def main() -> None:
    args = bench_parser(__doc__).parse_args()
    families, rounds, batches = (QUICK, 1, 5) if args.quick else (FAMILIES, 3, 30)
    result = {"devices": "2 CPU processes (gloo)", "batches_timed": batches, "rounds": rounds, "families": {}}
    with tempfile.TemporaryDirectory(prefix="genlab_bench_") as tmp:
        for family, family_args in families.items():
            times = {True: [], False: []}
            for _ in range(rounds):
                for find_unused in (False, True):
                    times[find_unused].append(seconds(family_args, find_unused, batches, Path(tmp)))
            on, off = min(times[True]), min(times[False])
            result["families"][family] = {
                "ms_per_batch_search_off": round(1000 * off / batches, 2),
                "ms_per_batch_search_on": round(1000 * on / batches, 2),
                "ratio_on_over_off": round(on / off, 3),
            }
    ratios = [f["ratio_on_over_off"] for f in result["families"].values()]
    result["mean_ratio"] = round(sum(ratios) / len(ratios), 3)
    report(
        "ddp_overhead",
        args.quick,
        result,
        f"find_unused_parameters on/off time ratio: {result['mean_ratio']}",
    )


if __name__ == "__main__":
    main()
