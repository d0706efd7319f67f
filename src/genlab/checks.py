"""Start-up checks of a composed config: invalid values and trainer combinations fail before any work is done.

This module imports neither torch nor Lightning (each check that needs them imports them itself), so the
entry points run the checks of the config alone (:func:`check_train_config`) before importing the pipeline:
a mistyped value is reported in about a second, not after the 5-10 s of importing torch and Lightning.
"""

import difflib
import inspect
import os
import re
from pathlib import Path

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, InterpolationResolutionError

from genlab.errors import CheckpointError, ConfigError

PRECISIONS = ("32", "32-true", "64", "64-true", "16-mixed", "16-true", "bf16-mixed", "bf16-true")


def check_ckpt_exists(cfg: DictConfig) -> None:
    """The command's ``ckpt_path``, where it is a path, names something on disk (what it holds is checked when
    it is read). A required one left unset (``???``) raises omegaconf's MissingMandatoryValue."""
    ckpt_path = OmegaConf.select(cfg, "ckpt_path", throw_on_missing=True)
    if ckpt_path and ckpt_path != "last" and not (path := Path(ckpt_path).expanduser()).exists():
        raise CheckpointError(f"ckpt_path={ckpt_path}: no checkpoint at {path}.")


def check_train_config(cfg: DictConfig) -> None:
    """What ``train.py``'s config alone can get wrong: non-positive sizes and rates, image shapes, a
    checkpoint path that does not exist, a trainer this machine cannot run."""
    check_positive(cfg)
    check_seed(cfg.get("seed"))
    check_image_shape(cfg)
    check_ckpt_exists(cfg)
    check_trainer(cfg.trainer, automatic_optimization=None)


def check_seed(seed: object) -> None:
    """``seed`` is a whole number (null: Lightning draws one)."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"seed must be a whole number, got {seed!r}: e.g. seed=42")


def check_eval_config(cfg: DictConfig) -> None:
    """``eval.py`` evaluates one thing (a checkpoint, samples or a reference export) on a known split."""
    if cfg.split not in ("train", "val", "test"):
        raise ConfigError(f"split={cfg.split} is unknown; choose val, test or train.")
    chosen = [key for key in ("ckpt_path", "samples", "export_reference") if cfg.get(key)]
    if len(chosen) != 1:
        raise ConfigError(
            "eval.py evaluates one thing: ckpt_path=<checkpoint>, samples=<folder | .npz | .npy> (with data=... or "
            f"reference=<stats.npz>), or export_reference=<file.npz> with data=...; got {chosen or 'none'}."
        )
    if cfg.split == "train" and cfg.get("ckpt_path"):
        raise ConfigError(
            "split=train applies to samples= and export_reference= (real statistics of the training images); "
            "a checkpoint is evaluated on split=val or split=test. To score its samples against the training "
            "images: sample.py ckpt_path=... num_samples=N, then eval.py samples=<its folder> data=... split=train"
        )
    if cfg.get("ckpt_path") and cfg.get("data") is not None:
        raise ConfigError(
            "data=... chooses the dataset of samples= and export_reference=; a checkpoint is evaluated on the data "
            "it was trained on: change that with data.<key>=... (e.g. data.root=<folder>, data.path=<file>), or "
            "write its samples (sample.py) and evaluate them: eval.py samples=<folder> data=..."
        )
    check_ckpt_exists(cfg)
    check_trainer(cfg.trainer, automatic_optimization=None)


def cuda_devices() -> int:
    """The CUDA GPUs visible, asked through NVML as Lightning asks: the question does not initialise CUDA in
    this process, so processes forked later (DDP, data workers) can still use it."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import torch

    return torch.cuda.device_count()


def _uses_gpu(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and cuda_devices() > 0)


def check_trainer(trainer: DictConfig, automatic_optimization: bool | None = True) -> None:
    """Rejects precision / accelerator / strategy combinations that cannot run here. Before the model is built
    (``automatic_optimization=None``) FSDP is left to the check with the model: whether the model can be
    sharded at all comes before which hardware it needs."""
    precision = str(trainer.get("precision", "32"))
    accelerator = str(trainer.get("accelerator", "auto"))
    strategy = trainer.get("strategy")
    strategy_name = str(OmegaConf.select(trainer, "strategy._target_") or strategy or "").lower()
    if precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision} is unknown; choose one of {', '.join(PRECISIONS)}.")
    if "fsdp" in strategy_name:
        if automatic_optimization is None:
            return
        if not automatic_optimization:
            raise ConfigError(
                "trainer=fsdp shards one optimizer's state, but this model steps its optimizers itself "
                "(manual optimization, e.g. the GAN's G/D updates); use trainer=ddp."
            )
        if accelerator == "cpu" or not cuda_devices():
            raise ConfigError("trainer=fsdp needs CUDA GPUs (Lightning's FSDP); on CPU use trainer=ddp_cpu.")
        if precision.startswith("64"):
            raise ConfigError(f"trainer=fsdp with precision {precision}: use bf16-mixed, bf16-true or 32.")
    if automatic_optimization is False:
        manual = "this model steps its optimizers itself (manual optimization: the GAN's D and G updates)"
        if trainer.get("gradient_clip_val"):
            raise ConfigError(
                f"trainer.gradient_clip_val does not apply: {manual}; clip with the model's own option instead, "
                f"e.g. model.grad_clip={trainer.gradient_clip_val}."
            )
        if trainer.get("accumulate_grad_batches", 1) != 1:
            raise ConfigError(
                f"trainer.accumulate_grad_batches does not apply: {manual}; raise data.batch_size instead."
            )
    if accelerator in ("gpu", "cuda") and not cuda_devices():
        raise ConfigError(
            f"trainer.accelerator={accelerator} but no CUDA GPU is visible; use trainer=cpu (or trainer=ddp_cpu)."
        )
    if precision.startswith("16") and not _uses_gpu(accelerator):
        raise ConfigError(
            f"trainer.precision={precision} needs a CUDA GPU (float16 autocast and loss scaling); "
            "on CPU use trainer.precision=bf16-mixed or 32."
        )
    devices = trainer.get("devices", 1)
    if _uses_gpu(accelerator) and isinstance(devices, int) and devices > cuda_devices():
        raise ConfigError(
            f"trainer.devices={devices} but {cuda_devices()} GPU(s) are visible; "
            "lower trainer.devices or use trainer.num_nodes to span machines."
        )


def _positive_keys(key: str) -> bool:
    """Learning rates (``lr``, ``d_lr``, ...), batch sizes and context lengths."""
    return key == "lr" or key.endswith("_lr") or key in ("batch_size", "block_size")


POSITIVE_EXAMPLES = {"lr": "2e-4", "batch_size": "64", "block_size": "256"}  # learning rates: as `lr`


def check_positive(cfg: DictConfig) -> None:
    """Learning rates and batch sizes anywhere in ``model`` and ``data`` must be > 0 (None = unset is fine)."""
    pending = [(group, cfg.get(group)) for group in ("model", "data")]
    while pending:  # breadth first: model.lr is named before model.optimizer.lr
        path, node = pending.pop(0)
        if not isinstance(node, DictConfig):
            continue
        for key in node:
            child = node._get_node(key)  # not resolved: other keys may interpolate run-time values
            if isinstance(child, DictConfig):
                pending.append((f"{path}.{key}", child))
                continue
            if not _positive_keys(str(key)) or OmegaConf.is_missing(node, key):
                continue
            try:
                value = node.get(key)
            except InterpolationResolutionError:
                continue  # e.g. ${data.block_size} on data without one: the modality check names that

            if value is not None and (
                not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0
            ):
                example = POSITIVE_EXAMPLES.get(str(key), POSITIVE_EXAMPLES["lr"])
                raise ConfigError(f"{path}.{key} must be positive, got {value}: e.g. {path}.{key}={example}")


SAMPLE_COUNTS = ("num_samples", "batch_size", "nrow", "steps", "per_class", "max_new_tokens", "beam_size")


def check_sample_config(cfg: DictConfig) -> None:
    """``sample.py``'s counts are positive integers (None = unset is fine), its ``ckpt_path`` exists."""
    for key in SAMPLE_COUNTS:
        value = cfg.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise ConfigError(f"{key} must be a positive integer, got {value!r}: e.g. {key}=16")
    if cfg.get("labels") is not None and not len(asked_labels(cfg)):
        raise ConfigError("labels=[] names no class: give some, e.g. labels=[3,7], or leave labels unset")
    check_sampling_options(cfg)
    check_ckpt_exists(cfg)


def asked_labels(cfg: DictConfig) -> list[int | str]:
    """``labels=[3,7]`` as a list; ``labels=3`` or ``labels=cat`` is one class."""
    return [cfg.labels] if isinstance(cfg.labels, (int, str)) else list(cfg.labels)


def check_sampling_options(cfg: DictConfig) -> None:
    """Text sampling's ``temperature`` >= 0 (0: greedy), ``top_k`` >= 0 (0 or unset: no cut) and ``top_p`` in
    (0, 1] (unset or 1: no cut); out of range they would invert or empty the distribution, silently."""
    bounds = {
        "temperature": (lambda v: v >= 0, "0 or more (0: greedy decoding), e.g. temperature=0.8"),
        "top_k": (lambda v: v >= 0 and float(v).is_integer(), "a whole number, 0 or more, e.g. top_k=50"),
        "top_p": (lambda v: 0 < v <= 1, "in (0, 1], e.g. top_p=0.9"),
    }
    for key, (valid, expected) in bounds.items():
        value = cfg.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not valid(value):
            raise ConfigError(f"{key} must be {expected}; got {value!r}")


DATA_OPTIONS = {
    "image": "digits, mnist, fashion_mnist, cifar10, celeba, image_folder",
    "text": "text_docs, text_file, parallel",
}


def check_modality(cfg: DictConfig) -> None:
    """The model and the data are of the same modality (declared by both classes): a GPT on images fails here."""
    from genlab.data.base import GenlabDataModule
    from genlab.models import GenerativeModel

    model, data = get_class(cfg.model._target_), get_class(cfg.data._target_)
    if not (issubclass(model, GenerativeModel) and issubclass(data, GenlabDataModule)):
        return  # a user's own classes declare nothing to compare
    wanted, given = model.modality, data.modality
    if wanted != given:
        raise ConfigError(
            f"{model.__name__} trains on {wanted} data but data={data.name} yields "
            f"{given} data: choose {wanted} data (data={DATA_OPTIONS[wanted].replace(', ', ' | ')})."
        )


def check_writable(directory: Path) -> None:
    """The run's output dir can be created and written, before any work that would be lost."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"Cannot write to the output dir {directory} ({err.strerror or err}); "
            "point hydra.run.dir (or paths.log_dir) at a writable location."
        ) from None


def check_image_shape(cfg: DictConfig) -> None:
    """Every ``channels`` / ``resolution`` of the model's networks matches the images the data yields."""
    data = cfg.get("data") or {}
    for net_name, net in (cfg.get("model") or {}).items():
        if not isinstance(net, DictConfig):
            continue
        for key in ("channels", "resolution"):
            if key in net and key in data and net[key] != data[key]:
                raise ConfigError(
                    f"model.{net_name}.{key}={net[key]} but the data yields {key} {data[key]} "
                    f"(data.{key}): images of the wrong size for the model. Set data.{key}={net[key]} "
                    f"or leave model.{net_name}.{key} at its default ${{data.{key}}}."
                )


def _target_options(node: DictConfig) -> tuple[set[str], bool]:
    """The keyword arguments of a node's ``_target_`` and whether it takes any (``**kwargs``)."""
    try:
        parameters = inspect.signature(get_class(node._target_)).parameters.values()
    except Exception:  # not a class, or not importable here: nothing to compare with
        return set(), True
    names = {p.name for p in parameters if p.kind is not p.VAR_KEYWORD}
    return names, any(p.kind is p.VAR_KEYWORD for p in parameters)


def check_override_keys(run_cfg: DictConfig, overrides: DictConfig, path: str = "") -> None:
    """Each key of ``eval.py``'s overrides (``model.iw_samples=100``) is an option of the evaluated run: a key of
    its stored config or an argument of the node's ``_target_``; under a section the run left out (``metrics``
    of a run without them) anything goes. A misspelt key is one line with the closest option, not an error from
    inside instantiate."""
    for key, value in overrides.items():
        here = f"{path}{key}"
        if not isinstance(run_cfg, DictConfig):
            return
        if key not in run_cfg:
            names, open_ended = _target_options(run_cfg) if "_target_" in run_cfg else (set(), False)
            if open_ended or key in names:
                continue
            raise ConfigError(
                f"{here} is not an option of the evaluated run's {path.rstrip('.') or 'config'}; "
                + _closest(str(key), _options(run_cfg) | names, path)
            )
        if isinstance(value, DictConfig):
            check_override_keys(run_cfg._get_node(key), value, f"{here}.")


def _options(node: DictConfig) -> set[str]:
    return {str(k) for k in node if not str(k).startswith("_")}


def _closest(key: str, options: set[str], path: str) -> str:
    """Names the option closest to ``key`` (``did you mean <path><option>?``), else lists the options."""
    close = difflib.get_close_matches(key, sorted(options), n=1)
    return f"did you mean {path}{close[0]}?" if close else f"its options: {', '.join(sorted(options))}"


def composition_error(error: Exception) -> str:
    """One line for Hydra's refusal of a command's overrides, in place of its five. A key the config lacks
    (``model.lrr=0.1``) names the closest option; Hydra's advice to append it (``+model.lrr=0.1``) is given only
    where the node's class takes that argument. An unknown config of a group (``model=ganx``) lists the group's."""
    text = str(error)
    cause = error.__cause__
    if isinstance(cause, ConfigAttributeError | ConfigKeyError) and isinstance(cause.parent_node, DictConfig):
        full = str(cause.full_key)
        path, _, key = full.rpartition(".")
        node, where = cause.parent_node, path or "the config"
        typed = re.search(r"Could not override '([^']+)'", text)
        # Hydra's own advice, +<key>=<value> as typed
        append = text.partition("To append to your config use ")[2].strip() or f"+{full}=..."
        if typed and typed[1] != full:  # a whole section the command's config lacks (sample.py's model.<key>)
            leaf, value = typed[1].rpartition(".")[2], append.partition("=")[2]
            options = ", ".join(sorted(_options(node)))
            hint = f"did you mean {leaf}={value}?" if leaf in node else f"its options: {options}"
            return f"{typed[1]}: this command's config has no {full} section; {hint}"
        names, open_ended = _target_options(node) if "_target_" in node else (set(), False)
        if key in names or (open_ended and names):
            return f"{full} is not in {where}'s config, but {node._target_} takes it: add it with {append}"
        hint = _closest(key, _options(node) | names, path + "." if path else "")
        return f"{full} is not an option of {where}; {hint}"
    if missing := re.search(r"Could not find '(.+)/([^/']+)'", text):
        group, name = missing.groups()
        listed = text.partition("Available options in")[2].partition("Config search path")[0]
        choices = [line.strip() for line in listed.splitlines()[1:] if line.strip()]
        return (
            f"{group}={name} is not a config of {group} (conf/{group}/): choose one of {', '.join(choices)}"
        )
    if override := getattr(error, "override", None):  # Hydra's parser: which argument, and the way out
        key, _, value = override.partition("=")
        reason = text.splitlines()[0]
        return f"{override}: Hydra cannot read this value ({reason}); quote it: '{key}=\"{value}\"'"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(line for line in lines if not line.startswith(("Config search path", "provider=")))
