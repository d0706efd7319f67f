"""Start-up checks of a composed config: invalid trainer combinations fail before any work is done."""

from pathlib import Path

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from genlab.data.base import GenlabDataModule
from genlab.errors import ConfigError
from genlab.models import GenerativeModel

PRECISIONS = ("32", "32-true", "64", "64-true", "16-mixed", "16-true", "bf16-mixed", "bf16-true")


def _uses_gpu(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def check_trainer(trainer: DictConfig, automatic_optimization: bool = True) -> None:
    """Rejects precision / accelerator / strategy combinations that cannot run here."""
    precision = str(trainer.get("precision", "32"))
    accelerator = str(trainer.get("accelerator", "auto"))
    strategy = trainer.get("strategy")
    strategy_name = str(OmegaConf.select(trainer, "strategy._target_") or strategy or "").lower()
    if precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision} is unknown; choose one of {', '.join(PRECISIONS)}.")
    if "fsdp" in strategy_name:
        if not automatic_optimization:
            raise ConfigError(
                "trainer=fsdp shards one optimizer's state, but this model steps its optimizers itself "
                "(manual optimization, e.g. the GAN's G/D updates); use trainer=ddp."
            )
        if accelerator == "cpu" or not torch.cuda.is_available():
            raise ConfigError("trainer=fsdp needs CUDA GPUs (Lightning's FSDP); on CPU use trainer=ddp_cpu.")
        if precision.startswith("64"):
            raise ConfigError(f"trainer=fsdp with precision {precision}: use bf16-mixed, bf16-true or 32.")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} but no CUDA GPU is visible; use trainer=cpu (or trainer=ddp_cpu)."
        )
    if precision.startswith("16") and not _uses_gpu(accelerator):
        raise ConfigError(
            f"trainer.precision={precision} needs a CUDA GPU (float16 autocast and loss scaling); "
            "on CPU use trainer.precision=bf16-mixed or 32."
        )
    devices = trainer.get("devices", 1)
    if _uses_gpu(accelerator) and isinstance(devices, int) and devices > torch.cuda.device_count():
        raise ConfigError(
            f"trainer.devices={devices} but {torch.cuda.device_count()} GPU(s) are visible; "
            "lower trainer.devices or use trainer.num_nodes to span machines."
        )


def _positive_keys(key: str) -> bool:
    """Learning rates (``lr``, ``d_lr``, ...), batch sizes and context lengths."""
    return key == "lr" or key.endswith("_lr") or key in ("batch_size", "block_size")


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
                raise ConfigError(f"{path}.{key} must be positive, got {value}: e.g. {path}.{key}=...")


SAMPLE_COUNTS = ("num_samples", "batch_size", "nrow", "steps", "per_class", "max_new_tokens", "beam_size")


def check_sample_counts(cfg: DictConfig) -> None:
    """``sample.py``'s counts must be positive integers (None = unset is fine)."""
    for key in SAMPLE_COUNTS:
        value = cfg.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise ConfigError(f"{key} must be a positive integer, got {value!r}: e.g. {key}=16")
    if cfg.get("labels") is not None and not len(cfg.labels):
        raise ConfigError("labels=[] names no class: give some, e.g. labels=[3,7], or leave labels unset")


DATA_OPTIONS = {
    "image": "digits, mnist, fashion_mnist, cifar10, celeba, image_folder",
    "text": "text_docs, text_file, parallel",
}


def check_modality(cfg: DictConfig) -> None:
    """The model and the data are of the same modality (declared by both classes): a GPT on images fails here."""
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
