"""Reliability: exact resume, preemption, atomic checkpoints, divergence policies, bad input, safe loading."""

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from pytorch_lightning.plugins.precision import MixedPrecision

from genlab.callbacks.divergence import DivergenceError, DivergenceGuard
from genlab.checkpoints import CheckpointError
from genlab.checks import ConfigError
from genlab.families import FAMILIES
from genlab.models import nonfinite_flag
from genlab.pipeline import train
from tests.conftest import LABELLED, QUICK, ROOT, VARIANTS, compose_train, quick_run, run_script

FAMILY_ARGS = {name: quick_run(name) for name in VARIANTS}  # conditional variants too


class StopAfterFirstEpoch(pl.Callback):
    """An interruption at an epoch boundary that leaves the run's own settings (and LR schedule) alone."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trainer.should_stop = True


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def val_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return [
            {k: v for k, v in r.items() if k.startswith("val/") and v}
            for r in csv.DictReader(f)
            if any(r.get(family.val_metric) for family in FAMILIES.values())
        ]


def assert_same_tensors(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.allclose(a.float(), b.float(), atol=1e-6, rtol=0), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


# ---- resume ----
# The conditional variants resume through the same code as their families (labels are data, not state): under
# `-m long`, so CI stays within its time.
@pytest.mark.parametrize(
    "family", [pytest.param(v, marks=pytest.mark.long) if v.endswith(LABELLED) else v for v in FAMILY_ARGS]
)
def test_resume_reproduces_the_uninterrupted_run(family, tmp_path):
    args = FAMILY_ARGS[family]
    train(compose_train(args, tmp_path / "straight"))
    train(compose_train(args, tmp_path / "stopped"), extra_callbacks=[StopAfterFirstEpoch()])
    train(compose_train([*args, f"ckpt_path={tmp_path / 'stopped'}"], tmp_path / "resumed"))

    straight = load(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    assert (
        2 * load(tmp_path / "stopped" / "checkpoints" / "last.ckpt")["global_step"] == straight["global_step"]
    )
    resumed = load(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert straight["global_step"] == resumed["global_step"]
    for key in ("state_dict", "optimizer_states", "lr_schedulers"):  # EMA weights are in state_dict
        assert_same_tensors(straight[key], resumed[key], key)
    last_val = val_rows(tmp_path / "straight")[-1]
    assert last_val == val_rows(tmp_path / "resumed")[-1], "the same validation metrics at the end"


def test_a_learning_rate_typed_on_resume_replaces_the_checkpoints(tmp_path):
    """Lightning restores each param group's settings with the optimizer state: a typed model.lr was ignored.
    The schedule's position is kept: the rate is the new base rate times the same factor."""
    args = [*FAMILY_ARGS["gpt"], "model.warmup_steps=20"]
    train(compose_train([*args, "trainer.max_epochs=1"], tmp_path / "run"))
    before = load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    resume = [*args, "trainer.max_epochs=2", "model.lr=2e-5", f"ckpt_path={tmp_path / 'run'}"]
    train(compose_train(resume, tmp_path / "resumed"))
    after = load(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    (old,), (new,) = (c["optimizer_states"][0]["param_groups"][:1] for c in (before, after))
    assert old["initial_lr"] != 2e-5 and new["initial_lr"] == 2e-5 and 0 < new["lr"] <= 2e-5
    assert after["lr_schedulers"][0]["base_lrs"] == [2e-5, 2e-5]


def test_ckpt_path_last_finds_the_newest_run(tmp_path):
    train(compose_train(QUICK, tmp_path / "logs" / "old"))
    train(compose_train([*QUICK, "trainer.max_epochs=3"], tmp_path / "logs" / "new"))
    cfg = compose_train([*QUICK, "trainer.max_epochs=4", "ckpt_path=last"], tmp_path / "next")
    cfg.paths.log_dir = str(tmp_path / "logs")
    train(cfg)
    assert load(tmp_path / "next" / "checkpoints" / "last.ckpt")["global_step"] == 32  # 3 epochs resumed + 1


@pytest.mark.slow
# SIGINT takes SIGTERM's path once its handler has set the same flag (its own test under `-m long`).
@pytest.mark.parametrize("signum", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.long)])
def test_signal_saves_a_checkpoint_then_resume_finishes(signum, tmp_path):
    run = tmp_path / "run"
    args = [a for a in QUICK if "limit_train_batches" not in a and "max_epochs" not in a]
    args += ["trainer.max_epochs=3", f"hydra.run.dir={run}"]
    # Held at step 60 until the signal: batch 5 of epoch 1 (an epoch is 25 batches x (D + G) = 50 steps).
    reached = tmp_path / "reached"
    hold = ["+callbacks.hold._target_=tests.probes.WaitForSignalAfterStep", "+callbacks.hold.step=60"]
    hold += [f"+callbacks.hold.path={reached}"]
    env = {**os.environ, "GENLAB_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "src" / "train.py"), *args, *hold],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not reached.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    output = proc.communicate(timeout=120)[0]
    assert "Stopped by a signal" in output, output[-3000:]
    saved = load(last)
    assert saved["global_step"] == 60, "saved mid-run, after the batch the signal came in"
    assert not (run / "metrics.json").exists(), "the run did not pretend to finish"
    resume = [
        f"ckpt_path={run}",
        "++callbacks.hold=null",
        f"hydra.run.dir={tmp_path / 'resumed'}",
    ]  # no probe
    run_script("train.py", resume, tmp_path)
    assert load(tmp_path / "resumed" / "checkpoints" / "last.ckpt")["epoch"] == 2


KILL_DURING_WRITE = """
import os, signal, sys, torch
from genlab.callbacks.resilience import AtomicCheckpointIO
io, path = AtomicCheckpointIO(), sys.argv[1]
io.save_checkpoint({"version": 1, "w": torch.ones(1000)}, path)
real_save = torch.save
def dying_save(obj, f, *args, **kwargs):
    f.write(b"PK\\x03\\x04 half a checkpoint")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = dying_save
io.save_checkpoint({"version": 2, "w": torch.zeros(1000)}, path)
"""


def test_kill_9_during_checkpoint_write_keeps_the_previous_one(tmp_path):
    path = tmp_path / "last.ckpt"
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_WRITE, str(path)], cwd=ROOT, capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    checkpoint = load(path)
    assert checkpoint["version"] == 1 and checkpoint["w"].sum() == 1000


# ---- divergence ----
class InjectNaN(pl.Callback):
    """Poisons the gradients after the backward pass of optimizer step ``at``."""

    def __init__(self, at: int):
        self.at = at

    def on_after_backward(self, trainer, pl_module) -> None:
        if trainer.global_step == self.at:
            for p in pl_module.parameters():
                if p.grad is not None:
                    p.grad.view(-1)[0] = float("nan")


@pytest.mark.parametrize("family", ["gan", "vae"])  # manual and automatic optimization
def test_nan_policy_skip(family, tmp_path):
    metrics = train(compose_train(FAMILY_ARGS[family], tmp_path), extra_callbacks=[InjectNaN(at=4)])
    assert metrics["train/nonfinite_steps"] == 1
    state = load(tmp_path / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_nonfinite_flag_finds_one_bad_element_and_changes_nothing(bad, dtype):
    """The guard's check without clipping: one kernel per device and dtype over mixed tensors."""
    tensors = [torch.randn(64, 8, 3, 3), torch.randn(7).to(dtype), torch.randn(3, 5, dtype=torch.float64)]
    before = [t.clone() for t in tensors]
    assert float(nonfinite_flag(tensors)) == 0.0
    assert all(torch.equal(t, b) for t, b in zip(tensors, before))
    tensors[1][6] = bad
    assert math.isnan(float(nonfinite_flag(tensors)))


@pytest.mark.parametrize("family", ["gan", "vae"])
def test_gradient_scaler_overflow_is_not_divergence(family, tmp_path):
    """16-mixed (here on CPU, float16 autocast): a scale too high overflows the gradients of a finite loss;
    the scaler skips those steps and lowers its scale, and the guard must not count or stop on them."""
    cfg = compose_train(FAMILY_ARGS[family], tmp_path)
    guard, scaler = DivergenceGuard(max_bad_steps=2), torch.amp.GradScaler("cpu", init_scale=1e30)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=8,
        plugins=[MixedPrecision("16-mixed", "cpu", scaler)],
        callbacks=[guard],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
    )
    trainer.fit(instantiate(cfg.model, _convert_="all"), instantiate(cfg.data, _convert_="all"))
    assert scaler.get_scale() < 1e28, "the first steps overflowed"
    assert guard.bad_steps == 0 and trainer.global_step == 8


def test_nan_policy_stop_names_the_step(tmp_path):
    cfg = compose_train([*FAMILY_ARGS["vae"], "callbacks.divergence.policy=stop"], tmp_path)
    with pytest.raises(DivergenceError, match=r"at step 5 \(loss=.*\).*lower model.lr"):
        train(cfg, extra_callbacks=[InjectNaN(at=5)])
    assert load(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 4, "the epoch-0 checkpoint is kept"


def test_nan_policy_rollback_restores_the_snapshot(tmp_path, caplog):
    overrides = [
        *FAMILY_ARGS["vae"],
        "callbacks.divergence.policy=rollback",
        "callbacks.divergence.snapshot_every=2",
    ]
    metrics = train(compose_train(overrides, tmp_path), extra_callbacks=[InjectNaN(at=5)])
    assert metrics["train/nonfinite_steps"] == 1
    assert "rolled back to the snapshot of step 4" in caplog.text


def test_discriminator_collapse_is_reported(tmp_path, caplog):
    overrides = [
        *QUICK,
        "model.d_lr=0.05",
        "model.lr=1e-9",
        "model.collapse_patience=5",
        "trainer.max_epochs=4",
    ]
    metrics = train(compose_train(overrides, tmp_path))
    assert metrics["train/d_collapsed"] == 1.0
    assert "Discriminator collapse at step" in caplog.text


# ---- bad input ----
@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (["data=mnist", "data.root=/nonexistent/data"], FileNotFoundError, "data.root"),
        (["data.batch_size=0"], ConfigError, "data.batch_size must be positive, got 0"),
        (["model.lr=-0.001"], ConfigError, "model.lr must be positive, got -0.001"),
        (["model.generator.resolution=64"], ConfigError, "model.generator.resolution=64 but the data yields"),
    ],
)
def test_bad_input_fails_with_one_clear_message(overrides, error, message, tmp_path):
    with pytest.raises(error, match=message):
        train(compose_train([*QUICK, *overrides], tmp_path))


def test_empty_image_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    cfg = compose_train([*QUICK, "data=image_folder", f"data.root={tmp_path / 'empty'}"], tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="No images"):
        train(cfg)


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="Cannot write to the output dir"):
        train(compose_train(QUICK, blocker / "run"))


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("gan_run")
    train(compose_train(QUICK, run))
    return run


def test_checkpoint_of_another_family_is_refused(gan_run, tmp_path):
    cfg = compose_train([*FAMILY_ARGS["vae"], f"ckpt_path={gan_run}"], tmp_path)
    with pytest.raises(ConfigError, match="was trained with genlab.models.gan.GAN, but this run builds"):
        train(cfg)


def test_truncated_checkpoint_is_refused(gan_run, tmp_path):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes((gan_run / "checkpoints" / "last.ckpt").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        train(compose_train([*QUICK, f"ckpt_path={broken}"], tmp_path / "run"))
    proc = run_script("eval.py", [f"ckpt_path={broken}"], tmp_path, check=False)
    assert proc.returncode != 0 and "truncated or corrupt" in proc.stderr


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(gan_run, tmp_path):
    Payload.marker = tmp_path / "pwned"
    checkpoint = load(gan_run / "checkpoints" / "last.ckpt")
    checkpoint["extra"] = Payload()
    evil = tmp_path / "evil.ckpt"
    torch.save(checkpoint, evil)
    proc = run_script("eval.py", [f"ckpt_path={evil}"], tmp_path, check=False)
    assert proc.returncode != 0 and "refused" in proc.stderr
    with pytest.raises(CheckpointError, match="refused"):
        train(compose_train([*QUICK, f"ckpt_path={evil}"], tmp_path / "run"))
    assert not Payload.marker.exists(), "the payload never ran"


def test_secrets_stay_out_of_configs_and_checkpoints(tmp_path, monkeypatch):
    from tests.wandb_reader import read_run

    secret = "wandb-secret-0123456789"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    overrides = [*QUICK, "logger=wandb", "+notes=${oc.env:WANDB_API_KEY}", "+extra.hub_token=hf_abcdefgh123"]
    train(compose_train(overrides, tmp_path))
    checkpoint = load(tmp_path / "checkpoints" / "last.ckpt")
    assert (
        checkpoint["genlab_config"]["notes"] == "***"
        and checkpoint["genlab_config"]["extra"]["hub_token"] == "***"
    )
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    config = read_run(run_dir)["config"]
    assert config["notes"] == "***" and config["extra"]["hub_token"] == "***"
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert secret.encode() not in data and b"hf_abcdefgh123" not in data, path


def test_a_resume_composes_the_stored_overrides_with_those_typed_now(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from genlab.checkpoints import portable_overrides, resume_overrides

    stored = ["model=gpt", "data=text_file", "data.path='/b/livre (1).txt'", "trainer.max_steps=6"]
    stored += ["ckpt_path=/old/run", "paths.log_dir=/elsewhere", "~model.net.dropout"]
    stored += ["+callbacks.hold._target_=a.B", "+callbacks.hold.step=3"]
    typed = ["ckpt_path=/new/run", "trainer.max_steps=9", "+model.x=1", "++callbacks.hold=null"]
    assert resume_overrides(typed, stored) == [*stored[:3], *stored[6:], *typed]
    assert resume_overrides(["ckpt_path=/r", "model=gpt"], stored) is None, "retyped: checked instead"
    assert resume_overrides(["ckpt_path=/r", "experiment=gpt_multi30k"], stored) is None
    assert resume_overrides(["ckpt_path=/r"], None) is None, "an older checkpoint stores none"

    monkeypatch.setenv("WANDB_API_KEY", "wandb-secret-0123456789")
    cfg = OmegaConf.create({"data": {"path": str(tmp_path / "livre (1).txt")}})
    typed = [
        "data.path='livre (1).txt'",
        "+logger.wandb.api_key=abc",
        "+notes=wandb-secret-0123456789",
        "seed=3",
    ]
    assert portable_overrides(typed, cfg) == [f"data.path='{tmp_path / 'livre (1).txt'}'", "seed=3"]


def test_redaction_keeps_ordinary_keys():
    from genlab.utils.secrets import redact

    config = {
        "data": {"tokenizer": "bpe"},
        "model": {"bleu_max_new_tokens": 64},
        "x": {"api_key": "k", "token": "t"},
    }
    assert redact(config) == {
        "data": {"tokenizer": "bpe"},
        "model": {"bleu_max_new_tokens": 64},
        "x": {"api_key": "***", "token": "***"},
    }


def test_resumed_run_continues_its_wandb_run_and_step_counters(tmp_path):
    """Stop after epoch 1, resume into the same run dir: one W&B run id (W&B's resume), and the logged
    ``trainer/global_step`` (W&B) and ``step`` (CSV) go on from the checkpoint instead of restarting."""
    import csv

    from tests.wandb_reader import read_run

    args = [*QUICK, "logger=many", "trainer.max_epochs=1"]
    train(compose_train(args, tmp_path))
    first = load(tmp_path / "checkpoints" / "last.ckpt")
    first_csv = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    train(compose_train([*args[:-1], "trainer.max_epochs=2", f"ckpt_path={tmp_path}"], tmp_path))

    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2, runs
    records = [read_run(r) for r in runs]
    assert records[0]["run"].run_id == records[1]["run"].run_id == first["wandb_run_id"]
    series = [{} for _ in records]  # logged name (a scalar, or an image's key) -> the steps it was logged at
    for steps, record in zip(series, records):
        for row in record["history"]:
            media = {k.removesuffix("/_type") for k in row if k.endswith("/_type")}
            for key in row:
                if key.startswith("_") or key in ("trainer/global_step", "epoch"):
                    continue
                name = next((m for m in media if key.startswith(m + "/")), key)
                steps.setdefault(name, []).append(row["trainer/global_step"])
    shared = series[0].keys() & series[1].keys()
    assert {"val/d_x", "train/nonfinite_steps", "val/samples"} <= shared, shared
    for name in shared:
        assert max(series[0][name]) < min(series[1][name]), (name, series)
    resumed_csv = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    assert resumed_csv[: len(first_csv)] == first_csv, (
        "the rows before the stop are kept (Lightning deletes them)"
    )
    csv_steps = [int(row["step"]) for row in csv.DictReader(resumed_csv)]
    assert (
        len(resumed_csv) > len(first_csv) and csv_steps == sorted(csv_steps) and csv_steps[-1] > csv_steps[0]
    )
