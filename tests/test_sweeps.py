"""Hydra multiruns (basic and joblib launchers) and an Optuna sweep, each leaving its summary file."""

import csv
import json
import os

import pytest
import yaml

from tests.conftest import QUICK, ROOT, run_script
from tests.wandb_reader import read_run

pytestmark = pytest.mark.slow


def summary(sweep_dir) -> list[dict]:
    rows = json.loads((sweep_dir / "summary.json").read_text())
    with open(sweep_dir / "summary.csv") as f:
        assert [r["status"] for r in csv.DictReader(f)] == [r["status"] for r in rows]
    return rows


def test_two_by_two_multirun_summary_and_wandb_group(tmp_path):
    args = ["-m", "model.lr=1e-4,2e-4", "seed=1,2", *QUICK, "logger=wandb", "trainer.log_every_n_steps=1"]
    args.append(f"hydra.sweep.dir={tmp_path}")
    run_script("train.py", args, tmp_path)
    rows = summary(tmp_path)
    assert [r["status"] for r in rows] == ["completed"] * 4
    assert {r["overrides"].split(" ")[0] for r in rows} == {"model.lr=0.0001", "model.lr=0.0002"}
    assert all("train/g_loss" in r["metrics"] for r in rows)

    runs = [read_run(next((tmp_path / str(job) / "wandb").glob("offline-run-*"))) for job in range(4)]
    assert {r["run"].run_group for r in runs} == {f"{tmp_path.parent.name}_{tmp_path.name}"}, (
        "one group per sweep"
    )
    for run in runs:
        lr, seed = run["config"]["model"]["lr"], run["config"]["seed"]
        assert run["run"].display_name == f"model.lr={lr},seed={seed}", "named by the swept values"
        assert {f"model.lr={lr}", f"seed={seed}"} <= set(run["run"].tags)
        keys = {key for row in run["history"] for key in row}
        assert {"train/d_loss", "train/g_loss", "val/d_x", "val/d_g_z"} <= keys
        unscoped = {k for k in keys if "/" not in k and not k.startswith("_")} - {"epoch"}
        assert not unscoped, f"metrics outside train/ val/ test/ lr/: {unscoped}"
    assert len({r["run"].display_name for r in runs}) == 4


def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path):
    args = [
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "seed=1,2",
        *QUICK,
        "+callbacks.clock._target_=tests.probes.JobClock",
        "+callbacks.clock.path=${paths.output_dir}/clock.json",
        f"hydra.sweep.dir={tmp_path}",
    ]
    run_script("train.py", args, tmp_path, env={"PYTHONPATH": str(ROOT)})
    assert [r["status"] for r in summary(tmp_path)] == ["completed", "completed"]
    first, second = (json.loads((tmp_path / job / "clock.json").read_text()) for job in "01")
    assert os.getpid() not in (first["pid"], second["pid"]) and first["pid"] != second["pid"], "own processes"
    assert first["start"] < second["end"] and second["start"] < first["end"], "the two fits overlap in time"


def test_optuna_sweep_records_failed_trials_and_goes_on(tmp_path):
    small = [a for a in QUICK if not a.startswith(("model.", "optimized_metric="))]
    small += ["model.encoder.width=8", "model.decoder.width=8"]
    args = [
        "hparams_search=vae_optuna",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.seed=2",
        "hydra.sweeper.params={model.lr:'choice(1e-3,-1.0)'}",  # lr=-1 fails at start-up
        *small,
        f"hydra.sweep.dir={tmp_path}",
    ]
    run_script("train.py", args, tmp_path)
    rows = summary(tmp_path)
    assert len(rows) == 3
    assert {r["status"] for r in rows} == {"completed", "failed"}
    failed = [r for r in rows if r["status"] == "failed"]
    assert all("model.lr must be positive" in r["error"] for r in failed)
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    completed = [r["metrics"]["val/nelbo"] for r in rows if r["status"] == "completed"]
    assert best["best_value"] == pytest.approx(min(completed))


def test_submitit_launcher_runs_jobs(tmp_path):
    """The submitit plugin's local executor: the path hydra/launcher=slurm takes, without a cluster."""
    args = ["-m", "hydra/launcher=submitit_local", "seed=1,2", *QUICK, f"hydra.sweep.dir={tmp_path}"]
    run_script("train.py", args, tmp_path)
    assert [r["status"] for r in summary(tmp_path)] == ["completed", "completed"]
    assert list((tmp_path / ".submitit").glob("*")), "jobs went through submitit"
