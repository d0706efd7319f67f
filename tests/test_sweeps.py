"""Hydra multiruns (basic and joblib launchers) and an Optuna sweep, each leaving its summary file."""

import csv
import json

import pytest
import yaml

from tests.conftest import QUICK, run_script

pytestmark = pytest.mark.slow


def summary(sweep_dir) -> list[dict]:
    rows = json.loads((sweep_dir / "summary.json").read_text())
    with open(sweep_dir / "summary.csv") as f:
        assert [r["status"] for r in csv.DictReader(f)] == [r["status"] for r in rows]
    return rows


def test_two_by_two_multirun_summary(tmp_path):
    run_script(
        "train.py", ["-m", "model.lr=1e-4,2e-4", "seed=1,2", *QUICK, f"hydra.sweep.dir={tmp_path}"], tmp_path
    )
    rows = summary(tmp_path)
    assert [r["status"] for r in rows] == ["completed"] * 4
    assert {r["overrides"].split(" ")[0] for r in rows} == {"model.lr=0.0001", "model.lr=0.0002"}
    assert all("train/g_loss" in r["metrics"] for r in rows)


def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path):
    args = [
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "seed=1,2",
        *QUICK,
        f"hydra.sweep.dir={tmp_path}",
    ]
    run_script("train.py", args, tmp_path)
    assert [r["status"] for r in summary(tmp_path)] == ["completed", "completed"]


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
