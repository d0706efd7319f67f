"""Finding and safely loading genlab checkpoints, with one clear error per way they can be wrong."""

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from genlab.checks import ConfigError

CONFIG_KEY = "genlab_config"


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file, the problem and the fix."""


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
        raise FileNotFoundError(
            f"ckpt_path=last: no checkpoints/last.ckpt under {[str(d) for d in search_dirs]}."
        )
    path = Path(ckpt_path).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: no checkpoint at {path}.")
    return str(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)``: tensors and plain containers only, never arbitrary pickles."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
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


def check_resumable(path: str, cfg) -> None:
    """The checkpoint loads safely and was trained by the same model family as ``cfg.model``."""
    checkpoint = load_checkpoint(path)
    stored = (checkpoint.get(CONFIG_KEY) or {}).get("model", {}).get("_target_")
    if stored and stored != cfg.model._target_:
        raise ConfigError(
            f"ckpt_path={path} was trained with {stored}, but this run builds {cfg.model._target_}: "
            "resume with the same model=... (or start a new run without ckpt_path)."
        )
