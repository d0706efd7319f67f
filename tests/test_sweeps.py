"""Hydra multiruns (basic and joblib launchers) and an Optuna sweep, each leaving its summary file."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

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
        f"+callbacks.clock.meet={tmp_path / 'meet'}",  # each fit waits for the other: launched one by one, they never meet
        f"hydra.sweep.dir={tmp_path}",
    ]
    run_script("train.py", args, tmp_path, env={"PYTHONPATH": str(ROOT)})
    assert [r["status"] for r in summary(tmp_path)] == ["completed", "completed"]
    first, second = (json.loads((tmp_path / job / "clock.json").read_text()) for job in "01")
    assert os.getpid() not in (first["pid"], second["pid"]) and first["pid"] != second["pid"], "own processes"
    assert first["met"] and second["met"], "each job's fit started while the other's was under way"
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


# The VAE's quickest settings for sweeps (QUICK minus the GAN's widths and the CPU trainer).
VAE_QUICK = [
    *(a for a in QUICK if not a.startswith(("model.", "trainer=", "optimized_metric="))),
    "model=vae",
    "model.encoder.width=8",
    "model.decoder.width=8",
]


def sweep_output(proc) -> str:
    return proc.stdout + proc.stderr


def test_multirun_of_ddp_jobs_has_one_row_per_job(tmp_path):
    """Lightning starts DDP rank 1 by re-running the command: in a multirun it must run its job, not the sweep
    (`trainer.devices=2`, the headline command's form; the Optuna sweep below runs `trainer=ddp_cpu` jobs)."""
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "seed=1,2",
        *VAE_QUICK,
        "trainer.devices=2",
        "optimized_metric=null",
        f"hydra.sweep.dir={sweep}",
    ]
    run_script("train.py", [*args, f"paths.log_dir={tmp_path / 'logs'}"], tmp_path)
    assert len((sweep / "jobs.jsonl").read_text().splitlines()) == 2, "one record per job, not per rank"
    rows = summary(sweep)
    assert [(r["job"], r["status"]) for r in rows] == [(0, "completed"), (1, "completed")]
    assert all("val/nelbo" in r["metrics"] for r in rows), "rank 0's metrics"
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    assert not (tmp_path / "logs").exists(), "no process ran a sweep or run of its own elsewhere"
    for job in ("0", "1"):
        hparams = yaml.safe_load((sweep / job / ".hydra" / "overrides.yaml").read_text())
        assert f"seed={int(job) + 1}" in hparams


def test_optuna_sweep_of_ddp_jobs_runs_n_trials_once(tmp_path):
    """Optuna under DDP: exactly n_trials trials in the persistent study, one 'Best value', rank 0's metric."""
    import optuna

    sweep, db = tmp_path / "sweep", tmp_path / "optuna.db"
    args = [
        "hparams_search=vae_optuna",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweeper.storage=sqlite:///{db}",
        *VAE_QUICK,
        "trainer=ddp_cpu",
        f"hydra.sweep.dir={sweep}",
    ]
    output = sweep_output(run_script("train.py", args, tmp_path))
    study = optuna.load_study(study_name="vae", storage=f"sqlite:///{db}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    rows = summary(sweep)
    assert len(rows) == 2
    assert study.best_value == pytest.approx(min(r["metrics"]["val/nelbo"] for r in rows))
    assert output.count("Best value") == 1
    assert "alembic" not in output, "the storage layer's set-up lines stay out of the log"


def test_stopped_optuna_sweep_resumes_with_the_missing_trials(tmp_path):
    """SIGTERM to a sweep in its second trial, then the same command: 3 completed trials in all, the
    interrupted one recorded as failed, the completed one not repeated."""
    import optuna

    db = tmp_path / "optuna.db"
    args = [
        "hparams_search=vae_optuna",
        "hydra.sweeper.n_trials=3",
        f"hydra.sweeper.storage=sqlite:///{db}",
        *VAE_QUICK,
        "trainer=cpu",
        "trainer.max_epochs=15",  # a trial of several seconds, to be stopped in
    ]
    first, second = tmp_path / "first", tmp_path / "second"
    env = {**os.environ, "GENLAB_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "src" / "train.py"), *args, f"hydra.sweep.dir={first}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not (first / "1").is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, output[-3000:]
    study = optuna.load_study(study_name="vae", storage=f"sqlite:///{db}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"], output[-3000:]
    assert "Trial 1 interrupted" in output

    resumed = sweep_output(run_script("train.py", [*args, f"hydra.sweep.dir={second}"], tmp_path))
    assert "2 more" in resumed
    study = optuna.load_study(study_name="vae", storage=f"sqlite:///{db}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert [r["job"] for r in summary(second)] == [2, 3], "jobs numbered after the first run's"
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 4, "no trial's parameters repeated"
