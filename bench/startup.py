"""Start-up cost: launching ``python src/train.py`` up to the end of its first training batch (one D and
one G step of the default GAN on digits), against a bare ``python -c "import torch, pytorch_lightning"``.

    python bench/startup.py            # best of 3 launches each
    python bench/startup.py --quick    # one launch each (CI)

The first batch is marked by bench/_startup_probe.py (a callback added from the command line that writes
``time.time()`` and stops training). One more launch under ``python -X importtime`` lists the heaviest
imports a plain GAN run does not need, and which module pulled each in.
Writes bench/results/startup[_quick].json and prints the ratio (first batch / bare import) last.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import bench_parser, report
from _startup_probe import ENV

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = [
    "trainer=cpu",
    "trainer.min_epochs=0",  # lets the probe's should_stop end the first epoch
    "trainer.max_epochs=1",
    "metrics=null",
    "optimized_metric=null",
    "+callbacks.startup_probe._target_=_startup_probe.FirstStep",
]
# Imported by a run but not needed to train a GAN on images (module prefixes).
UNNEEDED = (
    "wandb",
    "torch_fidelity",
    "tokenizers",
    "sacrebleu",
    "optuna",
    "tensorboard",
    "tensorboardX",
    "transformers",
    "scipy",
    "sympy",
    "mpmath",
    "triton",
    "regex",
    "pandas",
    "matplotlib",
    "torch._dynamo",
    "torchvision.models",
    "torchmetrics.functional.text",
)


def train_run(tmp: Path, python_flags: tuple[str, ...] = ()) -> tuple[float, float, str]:
    """(seconds to the first batch's end, seconds to exit, stderr) of one ``src/train.py`` launch."""
    probe = tmp / "probe"
    env = {
        **os.environ,
        ENV: str(probe),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "bench"), os.environ.get("PYTHONPATH")])),
        "GENLAB_CACHE": str(tmp / "cache"),
    }
    cmd = [sys.executable, *python_flags, "src/train.py", *OVERRIDES, f"hydra.run.dir={tmp / 'run'}"]
    start = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    total = time.time() - start
    if proc.returncode or not probe.is_file():
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return float(probe.read_text()) - start, total, proc.stderr


def bare_import(python_flags: tuple[str, ...] = ()) -> tuple[float, str]:
    """(seconds from launch until ``import torch, pytorch_lightning`` is done, stderr): the same clock as the
    probe's, so neither side counts the interpreter's exit (which takes a while after torch)."""
    code = "import torch, pytorch_lightning, time; print(time.time())"
    start = time.time()
    proc = subprocess.run(
        [sys.executable, *python_flags, "-c", code], check=True, capture_output=True, text=True
    )
    return float(proc.stdout.split()[-1]) - start, proc.stderr


def parse_importtime(stderr: str) -> list[tuple[str, float, float, int]]:
    """(module, self ms, cumulative ms, depth) per ``-X importtime`` line, in the order printed."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        self_us, cum_us, name = line.removeprefix("import time:").split("|")
        if self_us.strip().isdigit():
            depth = (len(name) - len(name.lstrip()) - 1) // 2
            rows.append((name.strip(), int(self_us) / 1000, int(cum_us) / 1000, depth))
    return rows


def extra_imports(rows: list[tuple[str, float, float, int]], bare: set[str]) -> dict[str, float]:
    """Own import ms per top-level package of the modules the bare import does not load, heaviest first."""
    ms: dict[str, float] = {}
    for module, self_ms, _, _ in rows:
        if module not in bare:
            ms[module.split(".")[0]] = ms.get(module.split(".")[0], 0.0) + self_ms
    return {k: round(v, 1) for k, v in sorted(ms.items(), key=lambda kv: -kv[1])}


def unneeded_imports(rows: list[tuple[str, float, float, int]]) -> list[dict]:
    """Per UNNEEDED prefix present: cumulative ms of its outermost import, its own modules' ms, the nearest
    importer from another package and the top-level import (importtime prints children before parents)."""
    parent: list[int | None] = [None] * len(rows)
    stack: list[int] = []
    for i in reversed(range(len(rows))):
        while stack and rows[stack[-1]][3] >= rows[i][3]:
            stack.pop()
        parent[i] = stack[-1] if stack else None
        stack.append(i)

    def within(module: str, prefix: str) -> bool:
        return module == prefix or module.startswith(prefix + ".")

    found = []
    for prefix in UNNEEDED:
        hits = [i for i, row in enumerate(rows) if within(row[0], prefix)]
        if not hits:
            continue
        first = max(hits, key=lambda i: rows[i][2])  # the outermost import of the package
        chain, j = [], parent[first]
        while j is not None:
            chain.append(rows[j][0])
            j = parent[j]
        package = prefix.split(".")[0]
        via = next((m for m in chain if m.split(".")[0] != package), "<top level>")
        found.append(
            {
                "module": rows[first][0],
                "cumulative_ms": round(rows[first][2], 1),
                "self_ms": round(sum(rows[i][1] for i in hits), 1),
                "imported_by": via,
                "root_import": chain[-1] if chain else rows[first][0],
            }
        )
    return sorted(found, key=lambda f: -f["cumulative_ms"])


def main() -> None:
    args = bench_parser(__doc__).parse_args()
    repeats = 1 if args.quick else 3

    bare = min(bare_import()[0] for _ in range(repeats))
    first_steps, exits = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            first, total, _ = train_run(Path(tmp))
        first_steps.append(first)
        exits.append(total)
    with tempfile.TemporaryDirectory() as tmp:
        _, _, stderr = train_run(Path(tmp), ("-X", "importtime"))
    rows = parse_importtime(stderr)
    unneeded = unneeded_imports(rows)
    extra = extra_imports(rows, {row[0] for row in parse_importtime(bare_import(("-X", "importtime"))[1])})

    result = {
        "command": f"python src/train.py {' '.join(OVERRIDES)} hydra.run.dir=<tmp>",
        "repeats": repeats,
        "bare_import_seconds": round(bare, 3),
        "first_batch_seconds": round(min(first_steps), 3),
        "first_batch_seconds_all": [round(s, 3) for s in first_steps],
        "process_exit_seconds": round(min(exits), 3),
        "ratio_first_batch_over_bare_import": round(min(first_steps) / bare, 3),
        "import_ms_all": round(sum(row[1] for row in rows), 1),
        "import_ms_beyond_bare": round(sum(extra.values()), 1),
        "import_ms_beyond_bare_by_package": dict(list(extra.items())[:8]),
        "unneeded_imports": unneeded[:10],
        "unneeded_pulled_in_by_genlab": [
            f["module"] for f in unneeded if f["imported_by"].startswith("genlab")
        ],
    }
    report(
        "startup",
        args.quick,
        result,
        f"first training batch {min(first_steps):.2f} s after launch vs bare torch+lightning import "
        f"{bare:.2f} s: ratio {result['ratio_first_batch_over_bare_import']:.2f}",
    )


if __name__ == "__main__":
    main()
