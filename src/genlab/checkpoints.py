"""Finding and safely loading genlab checkpoints, with one clear error per way they can be wrong."""

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from genlab.data.base import GenlabDataModule
from genlab.errors import CheckpointError, ConfigError

CONFIG_KEY = "genlab_config"
OVERRIDES_KEY = "genlab_overrides"  # the command-line overrides the run was composed from
#: Why a run's own config builds a model that its weights do not fit, and what to do.
STALE_NETWORK = (
    "The run's own config builds this model, so the checkpoint was written by a genlab whose networks differ "
    "from this one's: use that version of genlab to read it."
)


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


def restore_data_state(path: str, datamodule: GenlabDataModule, checkpoint: dict[str, Any]) -> None:
    """Gives ``datamodule`` what the checkpoint's run kept of its data for the model (its tokenizer, a
    labelled run's class names: the declared ``state_kind``) before any data is read, so that a resumed or
    evaluated run reads its data, other files included, as the model learned to. The state is the one of the
    run's datamodule class; another class takes it over where it declares the same kind, and is refused where
    the run kept state it cannot take."""
    kind = type(datamodule).state_kind
    stored = ((checkpoint.get(CONFIG_KEY) or {}).get("data") or {}).get("_target_")
    try:
        run_class = get_class(stored) if stored else type(datamodule)
    except (ImportError, ValueError):  # a class of an older genlab: its state is not read here
        return
    state = checkpoint.get(run_class.__qualname__) or {}
    if not (issubclass(run_class, GenlabDataModule) and run_class.state_kind and state):
        return
    run_kind = run_class.state_kind
    if run_kind != kind:
        raise ConfigError(
            f"ckpt_path={path} was trained on data={run_class.name}, whose {run_kind} the model is built on; "
            f"data={datamodule.name} cannot take it over: resume with data={run_class.name} (other files of its "
            "kind are fine), or start a new run without ckpt_path."
        )
    datamodule.load_state_dict(state)


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
    typed_keys = [arg.split("=", 1)[0].lstrip("+~") for arg in typed]
    differences = run_differences(cfg, checkpoint.get(CONFIG_KEY) or {})
    # model=gan retyped on a GAN run: its values are compared; a group of another class changes them all
    retyped = {
        key.split(".")[0] for key, _, _ in differences if key in {f"{s}._target_" for s in RUN_SECTIONS}
    }
    chosen_keys = [t for t in typed_keys if not (t in RUN_SECTIONS and t not in retyped)]
    changed = [
        (key, before, now)
        for key, before, now in differences
        if not any(key == t or key.startswith(f"{t}.") for t in chosen_keys)
    ]
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


def check_weights_fit(
    path: str, model: torch.nn.Module, checkpoint: dict[str, Any], config: DictConfig, fix: str
) -> None:
    """The checkpoint's weights load strictly into ``model`` (the model built from ``config``), or one line
    says which tensors differ, which settings of ``config`` differ from the run's, and ``fix``. Only shapes
    are compared: a memory-mapped checkpoint is not read."""
    stored, ours = checkpoint.get("state_dict") or {}, model.state_dict()
    problems = [
        f"{k} is {tuple(stored[k].shape)} in the checkpoint, {tuple(v.shape)} here"
        for k, v in ours.items()
        if k in stored and stored[k].shape != v.shape
    ]
    problems += [f"{k} is missing from the checkpoint" for k in ours if k not in stored]
    problems += [f"{k} is not in this model" for k in stored if k not in ours]
    if not problems:
        return
    more = f" (and {len(problems) - 2} more)" if len(problems) > 2 else ""
    differ = [
        f"{key}={typed_value(now)} (the run: {typed_value(before)})"
        for key, before, now in run_differences(config, checkpoint.get(CONFIG_KEY) or {})
    ]
    named = f" Settings that differ from the run's: {', '.join(differ)}." if differ else ""
    raise ConfigError(
        f"ckpt_path={path} holds weights that the model built now cannot take: {'; '.join(problems[:2])}{more}."
        f"{named} {fix}"
    )


def load_weights(
    path: str, model: torch.nn.Module, checkpoint: dict[str, Any], config: DictConfig, fix: str
) -> None:
    """The checkpoint's weights into ``model``, or :func:`check_weights_fit`'s one line."""
    check_weights_fit(path, model, checkpoint, config, fix)
    model.load_state_dict(checkpoint["state_dict"])


def run_differences(config: DictConfig, stored: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, the run's value, the value now)`` of each model or data setting of ``config`` that differs from
    ``stored`` (the run's config); null ones (filled in from the data) and interpolated ones (compared where
    they come from, e.g. ``data.block_size`` for the network's) are left out."""
    differences = []
    for section in RUN_SECTIONS:
        if section not in config or section not in stored:
            continue
        now = flat(OmegaConf.to_container(config[section], resolve=True), section)
        raw = flat(OmegaConf.to_container(config[section], resolve=False), section)
        before = flat(stored[section], section)
        differences += [
            (key, before[key], now[key])
            for key in before
            if key in now and now[key] not in (None, before[key]) and not derived(raw.get(key))
        ]
    return differences


def derived(value: Any) -> bool:
    """Whether a raw config value interpolates another (``${data.block_size}``)."""
    return isinstance(value, str) and "${" in value


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
