"""Finding and safely loading genlab checkpoints, with one clear error per way they can be wrong."""

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from genlab.errors import CheckpointError, ConfigError

CONFIG_KEY = "genlab_config"
OVERRIDES_KEY = "genlab_overrides"  # the command-line overrides the run was composed from


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


RUN_SECTIONS = ("model", "data")  # what a resumed run must share with the run it continues
RUN_GROUPS = ("model", "data", "experiment")  # choosing one of these on resuming retypes the run


def resume_overrides(typed: list[str], stored: list[str] | None) -> list[str] | None:
    """What a run resumed with the overrides ``typed`` (``ckpt_path=<run> trainer.max_steps=4000``) is composed
    from when they choose no model, data or experiment: the overrides its checkpoint stores, then those typed
    now (``++callbacks.x=null`` drops what stored ones added), less any stored for a key typed now, an old
    ``ckpt_path`` and ``paths.log_dir`` (where runs go: this command's). None where the run is retyped (then
    checked by :func:`check_same_run`) or the checkpoint stores none (written before genlab did)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    keys = {override.key_or_group for override in parser.parse_overrides(typed)}
    if stored is None or keys & set(RUN_GROUPS):
        return None
    replaced = keys | {"ckpt_path", "paths.log_dir"}
    kept = [line for line, o in zip(stored, parser.parse_overrides(stored)) if o.key_or_group not in replaced]
    return kept + typed


def stored_overrides(ckpt_path: str, log_dir: Path) -> list[str] | None:
    """The overrides stored in the checkpoint ``ckpt_path`` names (``last``: the newest under ``log_dir``);
    None where it stores none or cannot be read (the run then says why)."""
    try:
        path = resolve_ckpt_path(ckpt_path, (log_dir,))
        return load_checkpoint(path, mmap=True).get(OVERRIDES_KEY)
    except CheckpointError:
        return None


def portable_overrides(overrides: list[str], cfg) -> list[str]:
    """``overrides`` as a checkpoint stores them: ``data.path``/``data.root`` as the run resolved them
    (absolute, so a resumed run finds the data from any directory), secrets left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from genlab.cli import hydra_quote
    from genlab.utils.secrets import redact

    stored = []
    for line, override in zip(overrides, OverridesParser.create().parse_overrides(overrides)):
        key = override.key_or_group
        named = {key.rsplit(".", 1)[-1]: line}
        if redact(named) != named:  # a secret's key (api_key, hub_token) or value (that of WANDB_API_KEY)
            continue
        value = OmegaConf.select(cfg, key) if key in ("data.path", "data.root") else None
        if isinstance(value, str) and not override.is_delete():
            line = f"{override.get_key_element()}={hydra_quote(value)}"
        stored.append(line)
    return stored


def check_same_run(path: str, cfg, checkpoint: dict[str, Any], typed: list[str]) -> None:
    """A resumed run trains the model and data its checkpoint was trained on: a setting of ``model.*`` or
    ``data.*`` that differs from the stored one and was not typed now (``model.loss=hinge`` left off when
    resuming a hinge-loss run) is refused in one line naming the values to type. Typed ones change on purpose,
    as do all of a section whose group is typed with another class (``data=mnist`` on a ``digits`` run);
    interpolated settings (compared where they come from) and ones filled in later (null) are not compared."""
    stored = checkpoint.get(CONFIG_KEY) or {}
    typed_keys = [arg.split("=", 1)[0].lstrip("+~") for arg in typed]
    changed = []
    for section in RUN_SECTIONS:
        if section not in cfg or section not in stored:
            continue
        now = flat(OmegaConf.to_container(cfg[section], resolve=True), section)
        raw = flat(OmegaConf.to_container(cfg[section], resolve=False), section)
        before = flat(stored[section], section)
        same_class = now.get(f"{section}._target_") == before.get(f"{section}._target_")
        # model=gan retyped on a GAN run: its values are compared; a group of another class changes them all
        chosen_keys = [t for t in typed_keys if not (t == section and same_class)]
        for key in [k for k in before if k in now]:
            derived = isinstance(raw.get(key), str) and "${" in raw[key]  # compared where it comes from
            chosen = any(key == t or key.startswith(f"{t}.") for t in chosen_keys)
            if now[key] != before[key] and now[key] is not None and not derived and not chosen:
                changed.append((key, before[key], now[key]))
    if changed:
        shown = changed[:6]
        more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
        was = ", ".join(f"{k}={v!r} (now {n!r})" for k, v, n in shown)
        retype = " ".join(f"{k}={typed_value(v)}" for k, v, _ in shown)
        alone = " or leave out model=, data= and experiment= (then it is composed as it was)"
        raise ConfigError(
            f"ckpt_path={path} was trained with {was}{more}: to train on as it was trained, type them "
            f"({retype}){alone if checkpoint.get(OVERRIDES_KEY) else ''}; to change one on purpose, type its new "
            "value."
        )


def flat(tree: Any, prefix: str) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"<prefix>.a.b": 1}`` (lists are values)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    return {k: v for key, value in tree.items() for k, v in flat(value, f"{prefix}.{key}").items()}


def typed_value(value: Any) -> str:
    """``value`` as a command-line override would give it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(typed_value(v) for v in value) + "]"
    return str(value)


def epochs_done(checkpoint: dict[str, Any]) -> int:
    """Training epochs a Lightning checkpoint has finished (a mid-epoch checkpoint's epoch is not)."""
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {})
    processed = progress.get("current", {}).get("processed")
    return int(processed) if processed is not None else int(checkpoint.get("epoch", -1)) + 1
