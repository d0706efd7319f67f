"""Finding and safely loading genlab checkpoints, with one clear error per way they can be wrong."""

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from genlab.errors import CheckpointError, ConfigError

CONFIG_KEY = "genlab_config"


def resolve_ckpt_path(ckpt_path: str | None, search_dirs: tuple[Path, ...] = ()) -> str | None:
    """A checkpoint file; a run dir (-> its ``checkpoints/last.ckpt``); or ``last``: the newest
    ``checkpoints/last.ckpt`` under ``search_dirs`` (the current run dir first, then all runs)."""
    if not ckpt_path:
        return None
    if ckpt_path == "last":
        for root in search_dirs:
            found = sorted(Path(root).glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
            if found:
                return str(found[-1])
        raise CheckpointError(
            f"ckpt_path=last: no checkpoints/last.ckpt under {[str(d) for d in search_dirs]}."
        )
    path = Path(ckpt_path).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={ckpt_path}: no checkpoint at {path}.")
    return str(path)


def load_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """``torch.load(weights_only=True)``: tensors and plain containers only, never arbitrary pickles.

    ``mmap``: tensors stay on disk until read, so inspecting a multi-GB checkpoint costs neither time
    nor memory.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} holds Python objects that are not weights (refused: loading them could run arbitrary "
            f"code). Only use checkpoints you trust, written by genlab. Details: {str(err).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(
            f"{path} is truncated or corrupt ({str(err).splitlines()[0]}); use another checkpoint of the run "
            "(checkpoints/*.ckpt) or retrain."
        ) from None


def check_resumable(path: str, cfg) -> dict[str, Any]:
    """The checkpoint loads safely, was trained by the same model family as ``cfg.model`` and leaves
    something to train within ``cfg.trainer``'s budget (tensors are not read: Lightning loads them).
    Returns the (memory-mapped) checkpoint."""
    checkpoint = load_checkpoint(path, mmap=True)
    stored = (checkpoint.get(CONFIG_KEY) or {}).get("model", {}).get("_target_")
    if stored and stored != cfg.model._target_:
        raise ConfigError(
            f"ckpt_path={path} was trained with {stored}, but this run builds {cfg.model._target_}: "
            "resume with the same model=... (or start a new run without ckpt_path)."
        )
    epochs, steps = epochs_done(checkpoint), checkpoint.get("global_step", 0)
    max_epochs, max_steps = cfg.trainer.get("max_epochs"), cfg.trainer.get("max_steps", -1)
    if max_epochs is not None and max_epochs != -1 and max_epochs <= epochs:
        raise ConfigError(
            f"ckpt_path={path} has trained {epochs} epoch(s) and trainer.max_epochs={max_epochs} leaves nothing "
            f"to train: set trainer.max_epochs above {epochs} (e.g. trainer.max_epochs={epochs + 10}) to train "
            "on, or evaluate it with src/eval.py."
        )
    if max_steps is not None and max_steps != -1 and max_steps <= steps:
        raise ConfigError(
            f"ckpt_path={path} has made {steps} optimizer steps and trainer.max_steps={max_steps} leaves nothing "
            f"to train: set trainer.max_steps above {steps}, or evaluate it with src/eval.py."
        )
    return checkpoint


def epochs_done(checkpoint: dict[str, Any]) -> int:
    """Training epochs a Lightning checkpoint has finished (a mid-epoch checkpoint's epoch is not)."""
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {})
    processed = progress.get("current", {}).get("processed")
    return int(processed) if processed is not None else int(checkpoint.get("epoch", -1)) + 1
