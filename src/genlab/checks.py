"""Start-up checks of a composed config: invalid trainer combinations fail before any work is done."""

import torch
from omegaconf import DictConfig, OmegaConf

PRECISIONS = ("32", "32-true", "64", "64-true", "16-mixed", "16-true", "bf16-mixed", "bf16-true")


class ConfigError(ValueError):
    """A config value is invalid; the message names the key and the fix."""


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
