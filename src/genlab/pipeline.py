"""What ``src/train.py`` and ``src/eval.py`` run, given a composed config."""

import json
import logging
import re
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.utilities import rank_zero_only

from genlab.callbacks.distributed import RankSeed
from genlab.callbacks.image_metrics import ImageMetrics
from genlab.callbacks.resilience import (
    AtomicCheckpointIO,
    FinalCheckpoint,
    OptimizerSettings,
    Preemption,
    RNGState,
)
from genlab.callbacks.run_config import StoreConfig
from genlab.callbacks.validation import ValidateAcrossEpochs
from genlab.checkpoints import (
    CONFIG_KEY,
    STALE_NETWORK,
    check_resumable,
    check_same_run,
    check_weights_fit,
    load_checkpoint,
    load_weights,
    portable_overrides,
    resolve_ckpt_path,
    restore_data_state,
)
from genlab.checks import (
    ConfigError,
    asked_labels,
    check_eval_config,
    check_modality,
    check_override_keys,
    check_sample_config,
    check_train_config,
    check_trainer,
    check_writable,
)
from genlab.data.base import GenlabDataModule
from genlab.data.text import TokenizedDataModule
from genlab.export import is_export, load_export
from genlab.interfaces import ImageGenerator, ReportsProtocol, TextGenerator
from genlab.models import GenerativeModel
from genlab.models.conditioning import class_indices
from genlab.sample_eval import evaluate_samples, export_reference
from genlab.utils import ddp_launch
from genlab.utils.files import atomic_write
from genlab.utils.instantiate import instantiate_group
from genlab.utils.secrets import redact
from genlab.utils.step_cost import NullProfiler, remember_no_cuda, skip_unused_batch_hooks
from genlab.utils.wandb_runs import WandbRunId, continue_logged_run, organise_wandb_runs

log = logging.getLogger(__name__)
AUTO_METRIC = "auto"  # optimized_metric=auto: val/fid where FID can be computed, else the model's fallback


def quiet_known_warnings() -> None:
    """Silences notices about nothing the user can act on: EMA copies of networks are in eval mode on purpose,
    Lightning 2.6 still builds torch's deprecated ``LeafSpec`` (a FutureWarning on every run), and a run that
    stops before its first validation (``trainer.max_steps=2``) has no monitored metric for the best
    checkpoint, which Lightning reports with a hint to call ``self.log`` (:func:`report_unvalidated` says it
    plainly; once validation has run, Lightning raises on a missing key instead)."""
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
    warnings.filterwarnings("ignore", message=r".*could not find the monitored key in the returned metrics.*")


def train(cfg: DictConfig, extra_callbacks: list[pl.Callback] | None = None) -> dict[str, float]:
    """Fits ``cfg.model`` on ``cfg.data``; returns the final metrics (also written to metrics.json)."""
    pl.seed_everything(cfg.seed, workers=True)
    quiet_known_warnings()
    output_dir = Path(cfg.paths.output_dir)
    check_writable(output_dir)
    check_modality(cfg)
    check_train_config(cfg)
    absolute_data_paths(cfg)
    get_class(cfg.model._target_).configure_run(cfg)
    datamodule = instantiate(cfg.data, _convert_="all")
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), (output_dir, Path(cfg.paths.log_dir)))
    typed = typed_overrides()
    checkpoint = check_resumable(ckpt_path, cfg) if ckpt_path else None
    if checkpoint is not None:
        if typed is not None:
            check_same_run(ckpt_path, cfg, checkpoint, typed)
        restore_data_state(ckpt_path, datamodule, checkpoint)  # tokenizer or class names, before data is read
    if cfg.get("test"):
        check_test_split(datamodule)
    fill_model_inputs(cfg, datamodule)
    check_conditioning(cfg, datamodule)
    model = instantiate(cfg.model, _convert_="all")
    check_trainer(cfg.trainer, model.automatic_optimization)
    organise_wandb_runs(cfg)
    if checkpoint is not None:
        fix = "Resume with the run's values of the settings that shape the model, or start a new run."
        check_weights_fit(ckpt_path, model, checkpoint, cfg, fix)
        continue_logged_run(cfg, checkpoint)

    image_metrics = select_metrics(cfg, model)
    callbacks = instantiate_group(cfg.get("callbacks"))
    callbacks += [image_metrics] if image_metrics else []
    config = redact(OmegaConf.to_container(cfg, resolve=True))
    stored = portable_overrides(typed, cfg) if typed is not None else None  # for a resume without them typed
    callbacks += [
        StoreConfig(config, stored),
        RankSeed(cfg.seed),
        RNGState(),
        OptimizerSettings(),
        Preemption(output_dir / "checkpoints"),
    ]
    if any(isinstance(c, ModelCheckpoint) for c in callbacks):  # checkpointing is on
        callbacks += [FinalCheckpoint(output_dir / "checkpoints")]
    callbacks += [ValidateAcrossEpochs()]
    callbacks += [WandbRunId()]
    callbacks += extra_callbacks or []
    loggers = instantiate_group(cfg.get("logger"))
    plugins = [*instantiate(cfg.trainer.get("plugins") or [], _convert_="all"), AtomicCheckpointIO()]
    remember_no_cuda()
    defaults = {} if cfg.trainer.get("profiler") else {"profiler": NullProfiler()}
    if "enable_progress_bar" not in cfg.trainer and not any(isinstance(c, ProgressBar) for c in callbacks):
        defaults["enable_progress_bar"] = False  # callbacks.progress_bar=null: Lightning would add its own
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=plugins,
        **defaults,
        _convert_="all",
    )
    configure_ddp(trainer, model)
    skip_unused_batch_hooks(trainer.callbacks, model)
    for logger in loggers:
        logger.log_hyperparams(config)

    try:
        with ddp_launch.job_processes(trainer):
            if cfg.get("train", True):
                trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
                report_unvalidated(trainer)
            metrics = scalar_metrics(trainer.callback_metrics)
            if cfg.get("test"):  # test/ metrics of the best checkpoint (the last weights without one)
                best = next((c.best_model_path for c in model_checkpoints(trainer)), None)
                trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
                metrics.update(scalar_metrics(trainer.callback_metrics))
    finally:
        finish_wandb(loggers)
    write_json({**metrics, **protocols(model, trainer)}, output_dir / "metrics.json")
    return metrics


def model_checkpoints(trainer: pl.Trainer) -> list[ModelCheckpoint]:
    """The run's ModelCheckpoint callbacks, in order (the configured ones: best by metric, then last)."""
    return [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]


@rank_zero_only
def report_unvalidated(trainer: pl.Trainer) -> None:
    """One line where training ended before any validation gave the best checkpoint its metric."""
    unscored = [c for c in model_checkpoints(trainer) if c.monitor and not c.best_model_path]
    if not unscored or trainer.interrupted:
        return
    kept = [c.best_model_path for c in model_checkpoints(trainer) if not c.monitor and c.best_model_path]
    kept += [c.last_model_path for c in model_checkpoints(trainer) if c.last_model_path]
    kept += [c.written for c in trainer.checkpoint_callbacks if isinstance(c, FinalCheckpoint) and c.written]
    where = f"; {kept[0]} holds the final weights" if kept else ""
    log.info(
        "No best checkpoint by %s: training stopped at step %d before a validation computed it%s.",
        unscored[0].monitor,
        trainer.global_step,
        where,
    )


def typed_overrides() -> list[str] | None:
    """The overrides typed for this job (Hydra's), or None when the config was composed outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None


def absolute_data_paths(cfg: DictConfig) -> None:
    """``data.path`` and ``data.root`` typed relative to where ``train.py`` ran (``data.path=book.txt``) are made
    absolute in the run's config, which its checkpoints store: ``eval.py``, ``sample.py`` and a resumed run then
    find the data from any directory."""
    for key in ("path", "root"):
        value = cfg.data.get(key)
        if isinstance(value, str) and "://" not in value:
            path = Path(value).expanduser()
            if not path.is_absolute() and path.exists():
                cfg.data[key] = str(path.resolve())


def check_test_split(datamodule: pl.LightningDataModule) -> None:
    """``test=true`` / ``split=test`` fail at start-up, not after training, where the data has no test split."""
    if not datamodule.has_test_split:
        datamodule.test_dataloader()  # raises the datamodule's own message naming the fix


def fill_model_inputs(cfg: DictConfig, datamodule: GenlabDataModule) -> None:
    """Fills the model config's ``null`` keys that the data decides (:meth:`GenlabDataModule.model_inputs`,
    e.g. a GPT's ``vocab_size`` from the trained tokenizer), at any depth."""
    inputs = datamodule.model_inputs()
    if not inputs:
        return
    pending = [cfg.model]
    with open_dict(cfg):
        while pending:
            node = pending.pop()
            for key in node:
                child = node._get_node(key)
                if isinstance(child, DictConfig):
                    pending.append(child)
                elif key in inputs and child._value() is None:
                    node[key] = inputs[key]


def check_conditioning(cfg: DictConfig, datamodule: GenlabDataModule) -> None:
    """A class-conditional model (``model.num_classes`` set) needs data that yields labels."""
    if cfg.model.get("num_classes") and "num_classes" not in datamodule.model_inputs():
        raise ConfigError(
            f"model.num_classes={cfg.model.num_classes} makes the model class-conditional, but data={datamodule.name} "
            "yields no labels: add data.labels=true (labelled data), or leave model.num_classes unset."
        )


def load_run(ckpt_path: str) -> tuple[str, dict, DictConfig]:
    """(resolved path, checkpoint, the training run's config) of a genlab checkpoint."""
    if is_export(ckpt_path):  # a folder written by src/export.py
        checkpoint = load_export(ckpt_path)
        return str(ckpt_path), checkpoint, OmegaConf.create(checkpoint[CONFIG_KEY])
    path = resolve_ckpt_path(ckpt_path)
    checkpoint = load_checkpoint(path)
    if CONFIG_KEY not in checkpoint:
        raise ConfigError(f"{path} holds no genlab config ('{CONFIG_KEY}'): was it written by src/train.py?")
    return path, checkpoint, OmegaConf.create(checkpoint[CONFIG_KEY])


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Metrics of a checkpoint (``ckpt_path``), of samples from anywhere (``samples``), or the export of a
    split's real statistics (``export_reference``); written to the run dir's metrics.json."""
    check_eval_config(cfg)
    if cfg.get("samples") or cfg.get("export_reference"):
        task = evaluate_samples if cfg.get("samples") else export_reference
        record = task(cfg)
        write_json(record, Path(cfg.paths.output_dir) / "metrics.json")
        log.info("%s", json.dumps({k: v for k, v in record.items() if k != "protocol"}))
        return record
    return evaluate_checkpoint(cfg)


def evaluate_checkpoint(cfg: DictConfig) -> dict[str, float]:
    """Rebuilds a run from the config stored in ``cfg.ckpt_path`` and computes its validation metrics."""
    quiet_known_warnings()
    ckpt_path, checkpoint, run_cfg = load_run(cfg.ckpt_path)
    if cfg.get("data_root"):
        if "root" not in run_cfg.data:
            data = run_cfg.data._target_.rsplit(".", 1)[-1]
            where = (
                "+overrides.data.path=<file>"
                if "path" in run_cfg.data
                else "nothing: it ships with its package"
            )
            raise ConfigError(f"data_root applies to datasets read from a folder; {data} needs {where}.")
        run_cfg.data.root = cfg.data_root
    overrides = cfg.get("overrides") or OmegaConf.create({})
    check_override_keys(run_cfg, overrides)
    images = get_class(run_cfg.model._target_).modality == "image"
    if cfg.get("num_samples") and not images:
        raise ConfigError(
            "num_samples sets the FID/KID sample count of image models; for a text model use "
            "+overrides.model.bleu_samples=N (BLEU of N prompts) or +overrides.callbacks.text_samples.num_prompts=N."
        )
    # a run trained without FID (no Inception weights, or metrics=null) measures it with eval's image_metrics
    # group when asked to: by num_samples, or by metric settings that do not replace the whole section
    settings = overrides.get("metrics")
    asked = cfg.get("num_samples") or (isinstance(settings, DictConfig) and "_target_" not in settings)
    if images and asked and run_cfg.get("metrics") is None:
        run_cfg.metrics = OmegaConf.to_container(cfg.metrics, resolve=True)  # eval's image_metrics group
        log.info("The run computed no FID/KID; measuring them with eval.py's image_metrics group.")
    run_cfg = OmegaConf.merge(run_cfg, overrides)
    if cfg.get("num_samples"):
        run_cfg.metrics.num_samples = cfg.num_samples
    elif images and run_cfg.get("metrics") is None:
        log.warning(
            "FID/KID not measured: the run was trained without them; num_samples=N measures them now."
        )
    pl.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(run_cfg.data, _convert_="all")
    restore_data_state(ckpt_path, datamodule, checkpoint)  # the model's tokenizer or class names
    references = isinstance(datamodule, TokenizedDataModule) and datamodule.references
    if references and not run_cfg.model.get("bleu_samples"):
        run_cfg.model.bleu_samples = -1  # BLEU of the whole split evaluated
    model = instantiate(run_cfg.model, _convert_="all")
    load_weights(
        ckpt_path, model, checkpoint, run_cfg, "Leave out the overrides that change the model's shape."
    )
    check_trainer(cfg.trainer, model.automatic_optimization)
    image_metrics = build_image_metrics(
        run_cfg,
        bool(cfg.get("num_samples")),
        instead="leave out num_samples to measure the model's own metrics",
    )
    if image_metrics is None and run_cfg.get("metrics") is not None:
        log.warning("FID/KID skipped: %s. To enable FID/KID, %s.", WEIGHTS_MISSING, ENABLE_FID)
    callbacks = [image_metrics] if image_metrics else []
    run_callbacks = run_cfg.get("callbacks") or {}
    if text_samples := run_callbacks.get("text_samples"):  # generated text of the split
        text_samples.dirpath = str(Path(cfg.paths.output_dir) / "samples")
        callbacks.append(instantiate(text_samples))
    if sample_accuracy := run_callbacks.get("sample_accuracy"):  # class-conditional models
        callbacks.append(instantiate(sample_accuracy))
    trainer = instantiate(
        cfg.trainer,
        logger=False,
        callbacks=callbacks,
        enable_checkpointing=False,
        _convert_="all",
    )
    # The checkpoint's epoch: samples come from the seeds of that epoch's validation, so eval.py with the run's
    # settings reproduces the FID/KID the run logged for this checkpoint.
    trainer.fit_loop.epoch_progress.current.completed = checkpoint.get("epoch") or 0
    if cfg.split == "test" and not datamodule.has_test_split:
        if hint := datamodule.missing_test_split():
            raise ConfigError(
                f"The run's data (data={datamodule.name}) has no test split: {hint}, or evaluate split=val."
            )
        raise ConfigError(
            f"The run's data (data={datamodule.name}) has no test split, and one carved now would hold examples "
            "it trained on: evaluate split=val, or train with a test split (data.test_fraction=0.1; "
            "data.test_split for a parallel corpus)."
        )
    (trainer.validate if cfg.split == "val" else trainer.test)(model, datamodule=datamodule)
    metrics = scalar_metrics(trainer.callback_metrics)
    metrics.update(epoch=checkpoint.get("epoch"), global_step=checkpoint.get("global_step"))
    record = {"ckpt_path": str(ckpt_path), **metrics, **protocols(model, trainer)}
    write_json(record, Path(cfg.paths.output_dir) / "metrics.json")
    return metrics


def sample(cfg: DictConfig) -> Path:
    """Writes samples of a checkpoint's model to the run dir: images (grid + files) or text."""
    check_sample_config(cfg)
    ckpt_path, checkpoint, run_cfg = load_run(cfg.ckpt_path)
    model = instantiate(run_cfg.model, _convert_="all")
    load_weights(ckpt_path, model, checkpoint, run_cfg, STALE_NETWORK)
    device = (
        "cuda" if cfg.device == "auto" and torch.cuda.is_available() else cfg.device.replace("auto", "cpu")
    )
    model.to(device).eval()
    out = Path(cfg.paths.output_dir)
    generator = torch.Generator().manual_seed(cfg.seed)
    if isinstance(model, ImageGenerator):
        names = get_class(run_cfg.data._target_).class_names_from_checkpoint(checkpoint)
        written = sample_images(cfg, model, generator, out, names)
    elif isinstance(model, TextGenerator):
        # the run's datamodule, reading no data: its tokenizer and how it reads a prompt
        datamodule = instantiate(run_cfg.data, _convert_="all")
        datamodule.tokenizer = datamodule.tokenizer_from_checkpoint(checkpoint)
        written = sample_text(cfg, model, datamodule, generator, out)
    else:
        raise ConfigError(
            f"{type(model).__name__} declares no way to sample (ImageGenerator or TextGenerator)."
        )
    log.info("Wrote %d sample%s to %s", written, "" if written == 1 else "s", out)
    return out


def sample_images(
    cfg: DictConfig,
    model: GenerativeModel,
    generator: torch.Generator,
    out: Path,
    class_names: list[str] | None = None,
) -> int:
    """Writes the grid and the samples (PNG files or ``samples.npz``); returns how many samples."""
    import numpy as np
    from PIL import Image
    from torchvision.utils import save_image

    from genlab.metrics.inception import to_uint8

    asked = [k for k in ("sampler", "steps", "guidance", "labels", "per_class") if cfg.get(k) is not None]
    if unknown := [k for k in asked if k not in model.sample_options]:
        takes = ", ".join(model.sample_options) or "no sampling options"
        raise ConfigError(f"{unknown} do not apply to {type(model).__name__}: it takes {takes}.")
    options = {k: cfg[k] for k in asked if k in ("sampler", "steps", "guidance")}
    num, nrow, labels = cfg.num_samples, cfg.nrow, None
    if "labels" in asked or "per_class" in asked:
        classes = model.hparams.get("num_classes")
        if not classes:
            raise ConfigError(
                f"This {type(model).__name__} is unconditional (trained without data.labels=true): "
                "labels and per_class do not apply."
            )
        if cfg.get("per_class"):
            labels = torch.arange(classes).repeat_interleave(cfg.per_class)
            num, nrow = len(labels), cfg.per_class  # one grid row per class
        else:
            asked_for = class_indices(asked_labels(cfg), classes, class_names)
            labels = torch.tensor(asked_for).repeat(-(-num // len(asked_for)))[:num]
    batches = []
    for start in range(0, num, cfg.batch_size):
        size = min(cfg.batch_size, num - start)
        if labels is not None:
            options["labels"] = labels[start : start + size]
        batches.append(model.sample(size, generator=generator, **options).cpu())
    images = torch.cat(batches)
    rows = images if cfg.get("per_class") else images[: nrow**2]
    save_image(rows, out / "grid.png", nrow=nrow, normalize=True, value_range=(-1, 1))
    if labels is not None:  # sample i shows class labels[i]
        (out / "labels.txt").write_text("".join(f"{label}\n" for label in labels.tolist()))
    pixels = to_uint8(images)[:, : images.shape[1]].permute(0, 2, 3, 1).contiguous()  # the uint8 FID sees
    if cfg.format == "npz":
        np.savez_compressed(out / "samples.npz", images=pixels.numpy())
        return len(pixels)
    (out / "samples").mkdir(exist_ok=True)
    for i, image in enumerate(pixels):
        Image.fromarray(image.squeeze(-1).numpy()).save(out / "samples" / f"{i:06d}.png")
    return len(pixels)


ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def unescape(text: str) -> str:
    """``\\n``, ``\\t`` and ``\\\\`` as typed on a command line (``prompt="ROMEO:\\nJULIET:"``, which Hydra
    passes on as written) read as a newline, a tab and one backslash; any other character stays as it is."""
    return re.sub(r"\\([nt\\])", lambda m: ESCAPES[m.group(1)], text)


def sample_text(
    cfg: DictConfig,
    model: TextGenerator,
    datamodule: TokenizedDataModule,
    generator: torch.Generator,
    out: Path,
) -> int:
    """``num_samples`` continuations of ``prompt``, separated by blank lines, in samples.txt; with
    ``beam_size=k`` the one best continuation of beam search (deterministic, no sampling options). A model
    trained on pairs (a parallel corpus) reads the prompt as a source sentence and writes its translations,
    each up to the end-of-sequence token."""
    tokenizer, stop = datamodule.tokenizer, datamodule.eos_id
    prompt = torch.tensor([datamodule.prompt_ids(unescape(cfg.prompt))], device=model.device)
    if cfg.get("beam_size"):
        length_penalty = cfg.get("length_penalty")
        if length_penalty is None:  # the checkpoint's model.length_penalty
            length_penalty = getattr(model, "hparams", {}).get("length_penalty", 1.0)
        log.info("beam_size=%d: one deterministic continuation (num_samples does not apply)", cfg.beam_size)
        tokens = model.generate(
            prompt,
            cfg.max_new_tokens,
            beam_size=cfg.beam_size,
            length_penalty=length_penalty,
            stop_token=stop,
        )
    else:
        tokens = model.generate(
            prompt.repeat(cfg.num_samples, 1),
            cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            generator=generator,
            stop_token=stop,
        )
    if stop is None:  # plain text: the prompt and its continuation
        texts = [tokenizer.decode(row.tolist()) for row in tokens]
    else:  # pairs: the translation, up to <eos>
        rows = [row[prompt.shape[1] :].tolist() for row in tokens]
        texts = [tokenizer.decode(row[: row.index(stop)] if stop in row else row).strip() for row in rows]
    (out / "samples.txt").write_text("\n\n".join(texts))
    return len(texts)


WEIGHTS_MISSING = (
    "no FID Inception weights found (looked at metrics.fid.weights_path, $GENLAB_FID_WEIGHTS and torch hub's "
    "cache; the download failed or is disabled)"
)
ENABLE_FID = (
    "give the weights (torch-fidelity's weights-inception-2015-12-05-6726825d.pth) with "
    "metrics.fid.weights_path=<file> or GENLAB_FID_WEIGHTS=<file>"
)


def build_image_metrics(
    cfg: DictConfig,
    required: bool,
    instead: str = "set optimized_metric=auto to select checkpoints on another metric",
) -> ImageMetrics | None:
    """The FID/KID callback; None when ``metrics=null`` or no weights exist, an error then if ``required``
    (whose line ends with ``instead``: how to go on without FID)."""
    if cfg.get("metrics") is None:
        if required:
            raise ConfigError(
                "FID/KID are asked for (optimized_metric or a checkpoint monitor) but metrics=null; "
                "remove metrics=null, or set optimized_metric=auto."
            )
        return None
    callback = instantiate(cfg.metrics, _convert_="all")
    if callback.available:
        return callback
    if required:
        raise ConfigError(f"FID/KID are asked for but {WEIGHTS_MISSING}: {ENABLE_FID}, or {instead}.")
    return None


def select_metrics(cfg: DictConfig, model: GenerativeModel) -> ImageMetrics | None:
    """The FID/KID callback, and ``optimized_metric=auto`` resolved in ``cfg``: ``val/fid`` where FID can
    be computed, else the model's :attr:`~GenerativeModel.fallback_metric`, with one notice saying so.

    FID asked for by name (an experiment, a sweep, ``optimized_metric=val/fid``) without weights fails.
    """
    monitored = {cfg.get("optimized_metric")} | {
        node.get("monitor") for node in (cfg.get("callbacks") or {}).values() if node
    }
    image_metrics = build_image_metrics(cfg, required=bool(monitored & set(ImageMetrics.metric_names)))
    if cfg.get("optimized_metric") != AUTO_METRIC:
        return image_metrics
    cfg.optimized_metric = ImageMetrics.metric_names[0] if image_metrics else model.fallback_metric
    if image_metrics is None and cfg.get("metrics") is not None:
        selection = (
            f"checkpoints are selected on {cfg.optimized_metric}"
            if cfg.optimized_metric
            else "the last epoch's checkpoint is kept (no other metric ranks this model)"
        )
        if rank_zero_only.rank == 0:  # DDP children compose the same config
            log.warning(
                "FID/KID skipped: %s; %s. To enable FID/KID, %s.", WEIGHTS_MISSING, selection, ENABLE_FID
            )
        cfg.metrics = None
    return image_metrics


def configure_ddp(trainer: pl.Trainer, model: GenerativeModel) -> None:
    """DDP looks for unused parameters only where the model declares it needs to (unless the config says);
    the processes of a multirun job run that job (:mod:`genlab.utils.ddp_launch`)."""
    if isinstance(trainer.strategy, DDPStrategy):
        ddp_launch.install()
        trainer.strategy._ddp_kwargs.setdefault("find_unused_parameters", model.ddp_find_unused_parameters)


def protocols(model: GenerativeModel, trainer: pl.Trainer) -> dict[str, dict]:
    """``{"protocol": {metric: how it was measured}}`` of the model and callbacks that report one (none: {})."""
    protocol = {}
    for part in (model, *trainer.callbacks):
        if isinstance(part, ReportsProtocol):
            protocol.update(part.protocol())
    return {"protocol": protocol} if protocol else {}


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) or v.numel() == 1}


@rank_zero_only
def write_json(data: dict, path: Path) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=2, sort_keys=True).encode()))


def finish_wandb(loggers: list) -> None:
    """Close the W&B run so the next job of a multirun starts a new one."""
    from pytorch_lightning.loggers import WandbLogger

    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        wandb.finish()
