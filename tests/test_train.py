"""Real training runs: a Lightning Trainer, Hydra-composed configs, files on disk."""

import csv
import gc
import inspect
import json
import warnings
import weakref
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.callbacks import ModelCheckpoint

from genlab.callbacks.divergence import DivergenceGuard
from genlab.pipeline import ConfigError, train
from genlab.utils.step_cost import NullProfiler, remember_no_cuda
from tests.conftest import QUICK, compose_train, run_script
from tests.wandb_reader import read_run

pytestmark = pytest.mark.slow


def read_csv(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def column(rows, key) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key)]


def ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, fid_weights):
    """`python src/train.py` with every default, as in the README (weights given by environment)."""
    run_dir = tmp_path_factory.mktemp("default_run")
    env = {"GENLAB_FID_WEIGHTS": str(fid_weights)}  # 6 min alone here; up to 10 beside the other CI worker
    run_script("train.py", [f"hydra.run.dir={run_dir}"], run_dir, timeout=1200, env=env)
    return run_dir


@pytest.mark.long  # 6-10 min here; test_readme runs the same command as typed with small overrides
def test_default_run_completes_with_checkpoint_samples_and_metrics(default_run):
    run_dir = default_run
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "checkpoints").glob("best_epoch_*.ckpt")), "best checkpoint on val/fid"
    grids = sorted((run_dir / "samples").glob("epoch_*.png"))
    assert len(grids) == 20 and grids[-1].stat().st_size > 1000
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"train/d_loss", "train/g_loss", "train/d_x", "train/d_g_z", "val/fid", "val/kid_mean"} <= set(
        metrics
    )
    fids = column(read_csv(run_dir), "val/fid")
    assert len(fids) == 2 and fids[-1] < fids[0], fids  # epochs 10 and 20
    last = ckpt(run_dir / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 19 and last["genlab_config"]["model"]["_target_"] == "genlab.models.gan.GAN"
    assert (run_dir / ".hydra" / "config.yaml").is_file()


def test_eval_of_a_checkpoint_reproduces_the_metrics_its_run_logged(fid_weights, tmp_path):
    """eval.py draws the samples of the checkpoint's own epoch (the seeds its validation used) and KID's subsets
    from a fixed seed: with the run's settings it gives the FID and KID the run logged for that checkpoint."""
    fid = [f"metrics.fid.weights_path={fid_weights}", "metrics.num_samples=24", "metrics.max_real=24"]
    fid += ["metrics.kid.subset_size=16", "metrics.every_n_epochs=1", "optimized_metric=val/fid"]
    quick = [q for q in QUICK if not q.startswith(("metrics=", "optimized_metric="))]
    run = tmp_path / "run"
    train(compose_train([*quick, *fid, "callbacks.model_checkpoint.save_top_k=-1"], run))  # one per epoch
    logged = {int(r["epoch"]): r for r in read_csv(run) if r.get("val/fid")}
    assert logged[0]["val/fid"] != logged[1]["val/fid"]
    epoch = 1  # not the first: eval's own epoch counter starts at 0
    path, out = run / "checkpoints" / f"best_epoch_{epoch:03d}.ckpt", tmp_path / "eval"
    run_script("eval.py", [f"ckpt_path={path}", f"hydra.run.dir={out}"], run)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epoch"] == epoch and metrics["val/fid_samples"] == 24
    for key in ("val/fid", "val/kid_mean"):
        assert metrics[key] == pytest.approx(float(logged[epoch][key]), rel=1e-5), key


@pytest.mark.long
def test_gan_fid_improves_on_mnist(mnist_root, fid_weights, tmp_path):
    cfg = compose_train(
        [
            "data=mnist",
            f"data.root={mnist_root}",
            "data.batch_size=64",
            "trainer=cpu",
            "trainer.max_epochs=3",
            "+trainer.limit_train_batches=300",
            "+trainer.limit_val_batches=2",
            "model.generator.width=32",
            "model.discriminator.width=32",
            f"metrics.fid.weights_path={fid_weights}",
            "metrics.num_samples=100",
            "metrics.max_real=100",
            "metrics.every_n_epochs=1",
            "callbacks.progress_bar=null",
        ],
        tmp_path,
    )
    train(cfg)
    fids = column(read_csv(tmp_path), "val/fid")
    assert len(fids) == 3
    assert fids[-1] < 0.8 * fids[0], f"FID per validation: {fids}"


def test_bf16_mixed_precision(tmp_path):
    cfg = compose_train([*QUICK, "trainer.precision=bf16-mixed"], tmp_path)
    metrics = train(cfg)
    assert all(torch.isfinite(torch.tensor(metrics[k])) for k in ("train/d_loss", "train/g_loss"))
    assert ckpt(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 16  # 2 epochs x 4 batches x (D + G)


def test_n_critic_and_wgan_gp(tmp_path):
    cfg = compose_train(
        [
            *QUICK,
            "model.loss=wgan_gp",
            "model.n_critic=2",
            "model.discriminator.norm=none",
            "model.grad_clip=1.0",
        ],
        tmp_path,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = train(cfg)
    assert "train/gp" in metrics
    assert ckpt(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 12  # 8 D steps + 4 G steps
    # G's schedule steps on batch 0, before G's first step (batch 1): by design, not torch's misordering warning
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]


def test_wandb_offline_run_holds_metrics_images_and_checkpoints(tmp_path):
    overrides = [*QUICK, "logger=wandb", "trainer.log_every_n_steps=1", "logger.wandb.log_model=true"]
    cfg = compose_train(overrides, tmp_path)
    train(cfg)
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    run = read_run(run_dir)
    assert run["config"]["model"]["_target_"] == "genlab.models.gan.GAN", "resolved config logged"
    assert run["config"]["data"]["resolution"] == 32
    logged = {key for row in run["history"] for key in row}
    assert {"train/d_loss", "train/g_loss", "train/d_x", "train/d_g_z", "val/d_x"} <= logged
    grids = [row["val/samples/filenames"][0] for row in run["history"] if "val/samples/filenames" in row]
    assert len(grids) == 2, "one sample grid per validation epoch"
    for name in grids:
        with Image.open(run_dir / "files" / name) as image:
            assert image.size == (274, 274), "8x8 grid of 32 px samples with 2 px padding"
    originals = {json.loads(a.metadata)["original_filename"] for a in run["artifacts"] if a.type == "model"}
    assert originals == {"last.ckpt", "best_epoch_001.ckpt"}, "checkpoints logged as model artifacts"


def test_resume_continues_from_saved_step(tmp_path):
    first = tmp_path / "first"
    train(compose_train(QUICK, first))
    saved = ckpt(first / "checkpoints" / "last.ckpt")
    assert (saved["epoch"], saved["global_step"]) == (1, 16)  # saved at the end of epoch 1 (0-based)

    second = tmp_path / "second"
    train(
        compose_train(
            [*QUICK, "trainer.max_epochs=3", f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}"], second
        )
    )
    resumed = ckpt(second / "checkpoints" / "last.ckpt")
    assert (resumed["epoch"], resumed["global_step"]) == (2, 24)
    epochs = {r["epoch"] for r in read_csv(second) if r["epoch"]}
    assert epochs == {"2"}, "only the new epoch was trained"


def test_multirun_two_jobs(tmp_path):
    run_script("train.py", ["-m", "seed=1,2", *QUICK, f"hydra.sweep.dir={tmp_path}"], tmp_path)
    for job in ("0", "1"):
        assert (tmp_path / job / "metrics.json").is_file()
        assert (tmp_path / job / "checkpoints" / "last.ckpt").is_file()
    seeds = [ckpt(tmp_path / j / "checkpoints" / "last.ckpt")["genlab_config"]["seed"] for j in "01"]
    assert seeds == [1, 2]


def test_missing_fid_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    base = [a for a in QUICK if not a.startswith(("metrics=", "optimized_metric="))] + [
        "metrics.fid.download=false"
    ]
    asked = compose_train([*base, "optimized_metric=val/fid"], tmp_path / "asked")
    with pytest.raises(ConfigError, match="FID/KID are asked for but no FID Inception weights found"):
        train(asked)
    assert not (tmp_path / "asked" / "checkpoints").exists(), "failed at start-up, before training"

    gan = compose_train(base, tmp_path / "gan")  # optimized_metric=auto: the GAN keeps its last epoch
    metrics = train(gan)
    assert "val/fid" not in metrics and "train/g_loss" in metrics and gan.optimized_metric is None

    vae_args = [a for a in base if not a.startswith("model.")] + ["model=vae", "model.encoder.width=8"]
    vae = compose_train(vae_args, tmp_path / "vae")
    train(vae)
    assert vae.optimized_metric == "val/nelbo"
    stored = ckpt(next((tmp_path / "vae" / "checkpoints").glob("best_epoch_*.ckpt")))["genlab_config"]
    assert stored["optimized_metric"] == "val/nelbo" and stored["metrics"] is None
    assert stored["callbacks"]["model_checkpoint"]["monitor"] == "val/nelbo"


@pytest.mark.parametrize("option", ["fast_dev_run", "overfit", "profiler"])
def test_debug_configs_run(option, tmp_path):
    small = ["model.generator.width=16", "model.discriminator.width=16", "callbacks.progress_bar=null"]
    extra = ["trainer.max_epochs=2"] if option == "overfit" else []
    metrics = train(compose_train([f"debug={option}", *small, *extra], tmp_path))
    assert "train/g_loss" in metrics
    if option == "profiler":
        (report,) = tmp_path.glob("*profile*.txt")
        assert "run_training_epoch" in report.read_text()
    if option == "fast_dev_run":
        assert not (tmp_path / "checkpoints").exists(), "fast_dev_run writes no checkpoints"


class KeepTrainer(pl.Callback):
    def on_train_end(self, trainer, pl_module) -> None:
        self.profiler, self.bar, self.callbacks, self.module = (
            trainer.profiler,
            trainer.progress_bar_callback,
            trainer.callbacks,
            pl_module,
        )


def test_unprofiled_runs_use_the_null_profiler_and_a_null_bar_means_none(tmp_path):
    """Without ``trainer.profiler``, Lightning's ~200 ``profile()`` calls per batch get one shared no-op context;
    ``callbacks.progress_bar=null`` leaves no bar (Lightning would put its own, drawn at 100 Hz, in its place)."""
    keep = KeepTrainer()
    train(compose_train([*QUICK, "callbacks.progress_bar=null"], tmp_path), extra_callbacks=[keep])
    assert type(keep.profiler) is NullProfiler
    assert keep.profiler.profile("a") is keep.profiler.profile("b")
    assert keep.bar is None


class CountBatches(pl.Callback):
    def __init__(self):
        self.ends = 0

    def on_train_batch_end(self, *args) -> None:
        self.ends += 1


QUICK_VAE = [a for a in QUICK if not a.startswith("model.")] + ["model=vae", "model.encoder.width=8"]


class LastCheckpointAt(pl.Callback):
    """Whether ``checkpoints/last.ckpt`` exists at the end of training batch ``batch`` of the first epoch
    (before that batch's own checkpoint: Lightning runs checkpoint callbacks last)."""

    def __init__(self, batch: int):
        self.batch, self.found = batch, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.current_epoch == 0 and batch_idx == self.batch:
            self.found = (Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt").exists()


def test_callbacks_inherited_batch_hooks_are_skipped_and_their_own_still_run(tmp_path):
    """Lightning calls every per-batch hook of every callback and of the module, no-ops included (about 80
    calls a batch); genlab leaves it only the hooks that do something."""
    keep, count, seen = KeepTrainer(), CountBatches(), LastCheckpointAt(batch=2)
    train(compose_train(QUICK_VAE, tmp_path / "epochs"), extra_callbacks=[keep, count, seen])
    assert count.ends == 8 and count.on_train_batch_start is None and count.on_before_backward is None
    guard = next(c for c in keep.callbacks if isinstance(c, DivergenceGuard))
    assert callable(guard.on_before_optimizer_step) and guard.on_train_batch_end is None
    checkpoints = [c for c in keep.callbacks if isinstance(c, ModelCheckpoint)]
    assert len(checkpoints) == 2 and all(c.on_train_batch_end is None for c in checkpoints), "epochs only"
    assert seen.found is False, "no checkpoint before the first validation"

    # A checkpoint every 2 training steps keeps its batch hook, and saves from it (after batch 1: step 2).
    keep, seen = KeepTrainer(), LastCheckpointAt(batch=2)
    steps = [*QUICK_VAE, "+callbacks.last_checkpoint.every_n_train_steps=2"]
    train(compose_train(steps, tmp_path / "steps"), extra_callbacks=[keep, seen])
    last = next(c for c in keep.callbacks if isinstance(c, ModelCheckpoint) and c.filename == "last")
    assert callable(last.on_train_batch_end) and seen.found is True


class CsvRowsAt(pl.Callback):
    """The steps whose ``train/nelbo`` is in ``csv/metrics.csv`` on disk at the end of training batch ``batch``
    of the first epoch (before that batch's own row is logged)."""

    def __init__(self, batch: int):
        self.batch, self.steps = batch, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.current_epoch == 0 and batch_idx == self.batch:
            path = Path(trainer.default_root_dir) / "csv" / "metrics.csv"
            rows = read_csv(path.parents[1]) if path.exists() else []
            self.steps = [int(r["step"]) for r in rows if r.get("train/nelbo")]


def test_csv_rows_reach_the_file_every_flush_seconds_and_all_at_the_end(tmp_path):
    """Lightning saves the CSV after every logged step (~0.5 ms each); genlab's writes at most every
    ``logger.csv.flush_seconds`` and everything when the run ends."""
    final = {}
    for flush in (0, 3600):
        seen = CsvRowsAt(batch=3)
        args = [*QUICK_VAE, "trainer.log_every_n_steps=1", f"logger.csv.flush_seconds={flush}"]
        train(compose_train(args, tmp_path / str(flush)), extra_callbacks=[seen])
        final[flush] = read_csv(tmp_path / str(flush))
        assert seen.steps == ([0] if flush else [0, 1, 2]), (flush, seen.steps)  # the first save writes
    assert len(final[0]) == len(final[3600]) and column(final[0], "train/nelbo")
    assert [r["step"] for r in final[0]] == [r["step"] for r in final[3600]]


def test_module_no_op_batch_hooks_are_skipped_and_step_signatures_precomputed(tmp_path):
    """The module's inherited no-op batch hooks are skipped like the callbacks'; its own still run
    (``on_train_batch_end``, which updates EMA copies). Lightning reads ``training_step``'s signature each
    batch: it is precomputed, and says the same as the function."""
    keep = KeepTrainer()
    train(compose_train(QUICK_VAE, tmp_path), extra_callbacks=[keep])
    module = keep.module
    assert module.on_before_backward is None and module.on_before_zero_grad is None
    assert callable(module.on_train_batch_end) and callable(module.optimizer_zero_grad)
    step = type(module).training_step
    assert "__signature__" in vars(step)
    assert inspect.getfullargspec(module.training_step).args == ["self", "batch", "batch_idx"]


class HeapDuringTraining(pl.Callback):
    """The frozen count and whether a reference cycle made during training is collected, at batch 2."""

    def __init__(self, fail: bool = False):
        self.fail, self.frozen, self.cycle_collected = fail, 0, False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx == 1:
            self.frozen = gc.get_freeze_count()
            cycle = Cycle()
            alive = weakref.ref(cycle)
            del cycle
            gc.collect()
            self.cycle_collected = alive() is None
            if self.fail:
                raise RuntimeError("stop here")


class Cycle:
    def __init__(self):
        self.me = self


def test_heap_is_frozen_during_training_only(tmp_path):
    """Objects alive at the start of training are out of the collector's reach until it ends, on success or
    failure; garbage made during training is still collected."""
    assert gc.get_freeze_count() == 0
    heap = HeapDuringTraining()
    train(compose_train(QUICK, tmp_path / "ok"), extra_callbacks=[heap])
    assert heap.frozen > 10_000 and heap.cycle_collected and gc.get_freeze_count() == 0
    heap = HeapDuringTraining(fail=True)
    with pytest.raises(RuntimeError, match="stop here"):
        train(compose_train(QUICK, tmp_path / "failed"), extra_callbacks=[heap])
    assert heap.frozen > 10_000 and gc.get_freeze_count() == 0


class KeepOptimizers(pl.Callback):
    def on_train_end(self, trainer, pl_module) -> None:
        self.optimizers = trainer.optimizers


@pytest.mark.parametrize(
    "options, fused",
    [
        ([], True),  # G and D: Adam (manual optimization)
        (["model.optimizer._target_=torch.optim.RMSprop", "~model.optimizer.betas"], None),  # not Adam
        (["+model.optimizer.foreach=true"], None),  # the config chose an implementation
    ],
)
def test_adam_runs_its_fused_kernel_on_cpu_unless_the_config_chooses(tmp_path, options, fused):
    """torch runs Adam/AdamW on CPU as a per-tensor loop by default; the fused kernel is the same update,
    3-5x faster (bench: a 425k-parameter MLP 1.58 -> 0.43 ms a step)."""
    keep = KeepOptimizers()
    train(compose_train([*QUICK, *options], tmp_path), extra_callbacks=[keep])
    assert [o.defaults.get("fused") for o in keep.optimizers] == [fused, fused]
    assert all(o.state for o in keep.optimizers), "both took steps"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is there to be found")
def test_no_cuda_is_remembered(monkeypatch):
    """Lightning's PYTORCH_NVML_BASED_CUDA_CHECK=1 makes every is_available() (each optimizer step) retry NVML."""
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    monkeypatch.setattr(torch.cuda, "_cached_device_count", None)
    probes = []
    real = torch.cuda._device_count_nvml
    monkeypatch.setattr(torch.cuda, "_device_count_nvml", lambda: probes.append(1) or real())
    assert not torch.cuda.is_available() and probes, "without the fix each check probes NVML"
    remember_no_cuda()
    probes.clear()
    torch.optim.Adam([torch.nn.Parameter(torch.ones(1))]).step()
    assert not torch.cuda.is_available() and not probes


def test_overfit_fits_its_batches(tmp_path):
    args = ["debug=overfit", "model=vae", "model.encoder.width=16", "model.decoder.width=16"]
    train(compose_train([*args, "trainer.max_epochs=40", "callbacks.progress_bar=null"], tmp_path))
    losses = column(read_csv(tmp_path), "train/nelbo")
    assert len(losses) >= 6 and losses[-1] < 0.6 * losses[0], f"the two batches are fitted: {losses}"


def test_test_stage_logs_test_namespace(tmp_path):
    metrics = train(compose_train([*QUICK, "test=true", "+trainer.limit_test_batches=2"], tmp_path))
    assert {"test/d_x", "test/d_g_z", "val/d_x"} <= set(metrics)


def test_progress_bar_updates_at_its_rate_and_ends_on_the_last_batch(monkeypatch):
    """The training bar takes counts at most ``refresh_rate`` times a second, yet ends each epoch at the
    epoch's true count (a real Trainer, 200 fast batches per epoch)."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import RichProgressBar
    from pytorch_lightning.demos.boring_classes import BoringModel, RandomDataset

    from genlab.callbacks.progress import ProgressBar

    updates: list[int] = []
    original = RichProgressBar.on_train_batch_end

    def spy(self, trainer, pl_module, outputs, batch, batch_idx):
        updates.append(batch_idx + 1)
        original(self, trainer, pl_module, outputs, batch, batch_idx)

    monkeypatch.setattr(RichProgressBar, "on_train_batch_end", spy)
    bar = ProgressBar(refresh_rate=2)
    trainer = pl.Trainer(
        max_epochs=2,
        limit_val_batches=0,
        callbacks=[bar],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    model = BoringModel()
    model.train_dataloader = lambda: torch.utils.data.DataLoader(RandomDataset(32, 400), batch_size=2)
    trainer.fit(model)
    assert updates.count(200) == 2  # every epoch's last batch
    assert 2 <= len(updates) < 40  # not once per batch (400)
    assert 1 in updates  # the first batch shows at once
