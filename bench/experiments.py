"""What each experiment config reaches here: runs it as a user would, records the figures, writes the README table.

``--run NAME [override ...]`` trains ``python src/train.py experiment=NAME data.root=<shared data> ...`` (the
overrides shorten a run that does not fit this machine; they are recorded and shown), optionally evaluates
the checkpoint with ``--eval "<eval.py overrides>"``, and writes ``bench/results/experiments/NAME.json``:
the command, the budget trained (epochs, optimizer steps), the optimised metric and its protocol (split,
sample count), each evaluation's metrics (``--eval`` may be repeated), and the wall time of each. Without ``--run`` the README table
between ``<!-- experiments:begin -->`` and ``<!-- experiments:end -->`` is rewritten from those files (every
``conf/experiment/*.yaml`` gets a row; ones without a record say so); ``--check`` only verifies it is current.

    python bench/experiments.py --run gpt_shakespeare_char_cpu
    python bench/experiments.py --run vae_mnist_nll --eval "split=test +overrides.model.iw_samples=5000"
    python bench/experiments.py [--check]
"""

import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, SHAKESPEARE, SHARED, compose_train  # noqa: E402
from _results import bench_parser  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "experiments"
README = ROOT / "README.md"
BEGIN, END = "<!-- experiments:begin -->", "<!-- experiments:end -->"
QUICK = [  # --quick (CI): the same path on a few batches; recorded apart from the real figures
    "trainer.max_epochs=1",
    "trainer.max_steps=4",
    "++trainer.limit_train_batches=4",
    "++trainer.limit_val_batches=2",
    "++trainer.limit_test_batches=2",
    "trainer.val_check_interval=null",
    "++metrics.num_samples=8",
    "++metrics.max_real=8",
    "++model.bleu_samples=4",
    "callbacks.progress_bar=null",
]


def data_args(name: str) -> list[str]:
    """Where the experiment's dataset lives in ../shared (CelebA has no copy there)."""
    cfg = compose_train([f"experiment={name}"])
    if "path" in cfg.data:
        return [f"data.path={SHAKESPEARE}"]
    parallel = cfg.data._target_.endswith("ParallelDataModule")
    return [f"data.root={SHARED / 'data' / 'multi30k' if parallel else SHARED / 'data'}"]


def run(script: str, args: list[str], out: Path) -> float:
    """``python src/<script> args hydra.run.dir=out``; wall seconds. Its output streams to this terminal."""
    env = {**os.environ, "GENLAB_FID_WEIGHTS": str(SHARED / "weights" / "fid_inception_v3_2015_12_05.pth")}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, f"src/{script}", *args, f"hydra.run.dir={out}"], cwd=ROOT, env=env, check=True
    )
    return time.perf_counter() - start


def applicable(override: str, cfg) -> bool:
    """A quick override that fits the experiment: its key exists (trainer options always do)."""
    key = override.lstrip("+").split("=", 1)[0]
    return key.startswith("trainer.") or OmegaConf.select(cfg, key, default=None) is not None


def record(name: str, overrides: list[str], evaluations: list[list[str]], quick: bool) -> dict:
    composed = compose_train([f"experiment={name}", *overrides])
    overrides = [*overrides, *(q for q in QUICK if quick and applicable(q, composed))]
    args = [f"experiment={name}", *data_args(name), *overrides]
    with tempfile.TemporaryDirectory(prefix=f"genlab_{name}_") as tmp:
        out = Path(tmp) / "run"
        seconds = run("train.py", args, out)
        metrics = json.loads((out / "metrics.json").read_text())
        state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        result = {
            "experiment": name,
            "command": shlex.join(
                ["python", "src/train.py", f"experiment={name}", "data.root=...", *overrides]
            ),
            "overrides": overrides,
            "epochs": state["epoch"] + 1,
            "steps": state["global_step"],
            "optimized_metric": compose_train(args).get("optimized_metric"),
            "metrics": {k: v for k, v in metrics.items() if k != "protocol"},
            "protocol": metrics.get("protocol", {}),
            "seconds": round(seconds),
            "machine": f"{torch.get_num_threads()}-thread CPU ({platform.processor() or platform.machine()})",
            "date": time.strftime("%Y-%m-%d"),
        }
        result["evaluations"] = []
        few_samples = "num_samples=8" if composed.get("metrics") else "+overrides.model.bleu_samples=4"
        for i, extra in enumerate(evaluations):
            extra = [*extra, *(["++trainer.limit_test_batches=2", few_samples] if quick else [])]
            seconds = run("eval.py", [f"ckpt_path={out}", *extra], Path(tmp) / f"eval{i}")
            metrics = json.loads((Path(tmp) / f"eval{i}" / "metrics.json").read_text())
            result["evaluations"].append(
                {
                    "command": shlex.join(["python", "src/eval.py", "ckpt_path=<run>", *extra]),
                    "metrics": {k: v for k, v in metrics.items() if k != "protocol"},
                    "protocol": metrics.get("protocol", {}),
                    "seconds": round(seconds),
                }
            )
    folder = RESULTS.with_name("experiments_quick") if quick else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def described(metric: str, value: float, protocol: dict) -> str:
    """``val/fid 12.3 (val, 10000 samples)``: a figure with the split and sample count it was measured on."""
    entry = protocol.get(metric) or protocol.get(metric.split("/")[-1], {})
    where = [entry.get("split") or metric.split("/")[0]]
    for key, unit in (
        ("num_samples", "samples"),
        ("samples", "samples"),
        ("sentences", "sentences"),
        ("images", "images"),
        ("samples_per_image", "samples per image"),
    ):
        if key in entry:
            where.append(f"{entry[key]} {unit}")
    if "k" in entry:
        where.append(f"k={entry['k']}")
    if "decoding" in entry:
        where.append(entry["decoding"])
    return f"`{metric}` {value:.4g} ({', '.join(map(str, where))})"


GPU_SIZED = {  # experiments without a record that this 2-core CPU could only run cut to a sliver
    "diffusion_mnist": "sized for a GPU (40 epochs of a 64-wide UNet at 32 px); `cdiffusion_mnist` is sized for a CPU",
    "gpt_shakespeare_char": "nanoGPT's GPU config (10.7 M parameters, batch 64 x 256); `gpt_shakespeare_char_cpu` is its CPU twin",
}


def row(name: str) -> str:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        celeba = compose_train([f"experiment={name}"]).data._target_.endswith("CelebADataModule")
        why = "needs CelebA, which this machine lacks" if celeba else GPU_SIZED.get(name)
        return f"| `{name}` | not run here{f': {why}' if why else ''} | | | |"
    r = json.loads(path.read_text())
    metric = r["optimized_metric"]
    if metric == "auto":  # the pipeline's choice: val/fid where FID was computed
        metric = "val/fid"
    shown = (metric, "val/sample_accuracy")  # a conditional model: also how often samples show their class
    reached = [described(m, r["metrics"][m], r["protocol"]) for m in shown if m in r["metrics"]]
    for e in r["evaluations"]:
        test = [k for k in e["metrics"] if k.startswith("test/")] or list(e["metrics"])
        test.sort(key=lambda k: not ({k, k.split("/")[-1]} & e["protocol"].keys()))  # stated protocol first
        reached += [described(k, e["metrics"][k], e["protocol"]) for k in test[:2]]
    shortened = f" with `{' '.join(r['overrides'])}`" if r["overrides"] else ""
    trained = f"{r['epochs']} epoch(s), {r['steps']} steps{shortened}"
    seconds = " + eval ".join(f"{x['seconds']} s" for x in [r, *r["evaluations"]])
    return f"| `{name}` | {trained} | {'; '.join(reached)} | {seconds} | {r['machine']}, {r['date']} |"


def table() -> str:
    names = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
    head = "| experiment | trained here | reaches (split, samples) | wall time | where, when |\n|---|---|---|---|---|"
    return "\n".join([head, *(row(n) for n in names)])


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--run", metavar="NAME", help="train conf/experiment/NAME.yaml and record it")
    parser.add_argument(
        "--eval",
        action="append",
        default=[],
        help="eval.py overrides for the trained checkpoint (repeatable)",
    )
    parser.add_argument("--check", action="store_true", help="fail if the README table is not current")
    args, overrides = parser.parse_known_args()
    if args.run:
        print(
            json.dumps(record(args.run, overrides, [shlex.split(e) for e in args.eval], args.quick), indent=2)
        )
        return
    text = README.read_text()
    pattern = re.compile(f"{re.escape(BEGIN)}\n.*?{re.escape(END)}", re.S)
    if not pattern.search(text):
        sys.exit(f"README.md lacks the {BEGIN} ... {END} block the table goes in.")
    current = pattern.sub(f"{BEGIN}\n{table()}\n{END}".replace("\\", "\\\\"), text)
    if current == text:
        print("README experiments table is current.")
    elif args.check:
        sys.exit("README experiments table is out of date: run python bench/experiments.py")
    else:
        README.write_text(current)
        print("README experiments table rewritten.")


if __name__ == "__main__":
    main()
