"""Entry-point plumbing shared by ``src/train.py``, ``src/eval.py`` and ``src/sample.py``."""

import atexit
import contextlib
import functools
import os
import re
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from genlab.checks import composition_error
from genlab.errors import ConfigError, GenlabError

FULL_ERROR_ENV = "HYDRA_FULL_ERROR"
_typed_full_error: list[str | None] = []  # the user's HYDRA_FULL_ERROR while run_and_exit holds it at "1"


def user_error(err: BaseException) -> GenlabError | None:
    """The :class:`GenlabError` behind ``err`` (Hydra's instantiate and Lightning may wrap it), if any;
    a required config value left unset counts as one."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, GenlabError):
            return err
        if isinstance(err, MissingMandatoryValue):  # a `???` in the config that the command did not set
            return ConfigError(f"{err.full_key} is required: add {err.full_key}=... to the command.")
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _is_rank_zero() -> bool:
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def report_user_errors(task: Callable[..., Any]) -> Callable[..., Any]:
    """Errors meant for the user print as one line (``Error: ...``) and exit with status 1.

    Tracebacks stay one switch away: ``HYDRA_FULL_ERROR=1``. In a multirun the error also propagates,
    so the sweeper records the job as failed and goes on.
    """

    @functools.wraps(task)
    def wrapper(*args, **kwargs):
        _restore_full_error()  # the config is composed: Hydra reports the job's own errors as the user asked
        try:
            return task(*args, **kwargs)
        except Exception as err:
            problem = user_error(err)
            if problem is None or os.environ.get(FULL_ERROR_ENV) == "1":
                raise
            if _is_rank_zero():
                print(f"Error: {problem}", file=sys.stderr, flush=True)
            if _in_multirun():
                raise  # the sweeper records the failed job and goes on
            sys.exit(1)

    return wrapper


# Lightning's Trainer arguments (2.x; tests/test_entry_points.py checks them against the installed Trainer) that
# a command may set as `trainer.<name>=...` whether or not conf/trainer/ lists them (`logger` and `callbacks`
# are genlab's own groups).
TRAINER_ARGUMENTS = frozenset((
    "accelerator", "strategy", "devices", "num_nodes", "precision", "fast_dev_run", "max_epochs", "min_epochs",
    "max_steps", "min_steps", "max_time", "limit_train_batches", "limit_val_batches", "limit_test_batches",
    "limit_predict_batches", "overfit_batches", "val_check_interval", "check_val_every_n_epoch",
    "num_sanity_val_steps", "log_every_n_steps", "enable_checkpointing", "enable_progress_bar",
    "enable_model_summary", "accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm",
    "deterministic", "benchmark", "inference_mode", "use_distributed_sampler", "profiler", "detect_anomaly",
    "barebones", "plugins", "sync_batchnorm", "reload_dataloaders_every_n_epochs", "default_root_dir",
    "enable_autolog_hparams", "model_registry",
))  # fmt: skip


def trainer_overrides(args: list[str], listed: Path | None = None) -> list[str]:
    """The arguments, with ``trainer.<argument>=...`` of a Trainer argument that the trainer config ``listed``
    (default: ``conf/trainer/default.yaml``, which every trainer config extends) does not hold, such as
    ``trainer.max_time=00:01:00:00``, as ``++trainer.<argument>=...``: set, where Hydra would refuse a key its
    config lacks. The listed ones stay as typed; unknown keys (typos) are still refused."""
    listed = listed or Path(os.environ["GENLAB_ROOT"]) / "conf" / "trainer" / "default.yaml"
    unlisted = TRAINER_ARGUMENTS - set(OmegaConf.load(listed))
    keys = [arg.split("=", 1)[0] if "=" in arg else "" for arg in args]
    return [
        f"++{arg}" if key.removeprefix("trainer.") in unlisted and key.startswith("trainer.") else arg
        for arg, key in zip(args, keys)
    ]


def resumed_command(args: list[str]) -> list[str]:
    """train.py's arguments for ``ckpt_path=<run> [trainer.max_steps=...]`` typed without ``model=``, ``data=``
    or ``experiment=``: the overrides the checkpoint's run was composed from, then those typed now in place of
    the same keys (:func:`genlab.checkpoints.resume_overrides`). Hydra composes the run as it was trained, and a
    key only that run's config holds (``model.weight_decay`` of a GPT) can be typed. The arguments as they are
    where a run is retyped, under ``-m`` or another flag, or where the checkpoint cannot be read (the run then
    says why)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if any(arg.startswith("-") for arg in args):
        return args
    try:
        typed = {o.key_or_group: o for o in OverridesParser.create().parse_overrides(args)}
    except HydraException:
        return args  # Hydra says what is wrong
    ckpt = typed["ckpt_path"].value() if "ckpt_path" in typed else None
    if not isinstance(ckpt, str) or not ckpt:
        return args
    from genlab.checkpoints import resume_overrides, stored_overrides

    log_dir = (
        typed["paths.log_dir"].value() if "paths.log_dir" in typed else None
    )  # where `last` is looked for
    root = Path(os.environ.get("GENLAB_ROOT", "."))  # conf/paths/default.yaml: log_dir is <root>/outputs
    overrides = resume_overrides(args, stored_overrides(ckpt, Path(log_dir or root / "outputs")))
    if overrides is None:
        return args
    print(f"ckpt_path={ckpt}: resumed as its run was composed, with what is typed now: {' '.join(overrides)}")
    return overrides


# sections of a run's stored config that eval.py's `overrides` change as typed (model.beam_size=4)
CHECKPOINT_SECTIONS = ("model", "data", "metrics", "callbacks")


def checkpoint_overrides(args: list[str]) -> list[str]:
    """eval.py's arguments, with ``model.<key>=...`` and the like (:data:`CHECKPOINT_SECTIONS`) read as changes
    to the evaluated checkpoint's stored config (``+overrides.model.<key>=...``), as a user types them. eval.py's
    own config has no model or callbacks, and its data and metrics groups only set up samples from anywhere
    (``samples=``, ``export_reference=``, chosen with ``data=``; the metrics of a run trained without them),
    which these arguments then keep addressing. Typed for a run trained with FID, ``metrics.max_real=5000``
    was otherwise set on eval's own section and silently not applied."""
    keys = [arg.split("=", 1)[0] for arg in args]
    if "ckpt_path" not in keys or {"data", "samples", "export_reference"} & set(keys):
        return args
    return [
        f"+overrides.{arg}"
        if "=" in arg and key.split(".", 1)[0] in CHECKPOINT_SECTIONS and "." in key
        else arg
        for arg, key in zip(args, keys)
    ]


TEXT_KEYS = ("prompt",)  # options whose value is free text
# options whose value is a path or a name (and any ending in _path, _root, _dir, _name or urls: shard patterns)
STRING_KEYS = (
    "path",
    "root",
    "dir",
    "samples",
    "reference",
    "out",
    "init_from",
    "name",
    "project",
    "group",
    "notes",
)
NAME_KEYS = ("labels",)  # a name or list of names, e.g. an image folder's classes: labels=[été,hiver]


def quoted_overrides(args: list[str]) -> list[str]:
    """The arguments, quoted for Hydra where a user's text, path or name would not reach the config as typed.

    Unquoted, Hydra reads ``prompt="To be, or not to be"`` or ``data.path=books/a,b.txt`` as a sweep over two
    values, and its lexer refuses ``=``, ``(``, ``?``, accented letters and emoji: ``data.path=~/données/livre
    (1).txt`` failed. A prompt is always taken as text (``${`` included). A path or a name (:data:`STRING_KEYS`,
    e.g. ``data.root``, ``ckpt_path``, ``logger.wandb.name``) and each class name of ``labels=[...]`` are
    quoted only where Hydra could not read them as one value, so ``null`` and ``${paths.data_dir}/x`` keep their
    meaning. Values already in Hydra's quotes (``'prompt="..."'``) stay; in a multirun (``-m``), where a comma
    is a sweep, only values Hydra cannot read at all are quoted, each of the sweep's."""
    multirun = bool({"-m", "--multirun"} & set(args))
    quoted = []
    for arg in args:
        key, _, value = arg.partition("=")
        name = key.lstrip("+~").rsplit(".", 1)[-1]
        text = name in TEXT_KEYS
        if "=" in arg and (text or is_string_key(name)) and not hydra_quoted(value):
            if not multirun and (text or not one_hydra_value(value)):
                arg = f"{key}={hydra_quote(value, literal=text)}"
            elif multirun and not one_hydra_value(value, sweeps=True):  # each value of the sweep quoted
                arg = f"{key}=" + ",".join(hydra_quote(v, literal=text) for v in value.split(","))
        elif name in NAME_KEYS and not one_hydra_value(value):  # each name Hydra cannot read quoted
            names = [v.strip() for v in value.strip("[]").split(",")] if value.startswith("[") else [value]
            listed = ",".join(v if one_hydra_value(v) else hydra_quote(v) for v in names)
            arg = f"{key}=[{listed}]" if value.startswith("[") else f"{key}={listed}"
        quoted.append(arg)
    return quoted


def is_string_key(name: str) -> bool:
    return name in STRING_KEYS or name.endswith(("_path", "_root", "_dir", "_name", "urls"))


def hydra_reads(value: str) -> tuple[bool, Any]:
    """(whether Hydra can read ``key=<value>``, what it reads: a value, a sweep)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return True, OverridesParser.create().parse_override(f"key={value}").value()
    except HydraException:
        return False, None


def one_hydra_value(value: str, sweeps: bool = False) -> bool:
    """Whether Hydra reads ``value``, unquoted, as one value (not a syntax error; not a sweep unless
    ``sweeps``)."""
    from hydra.core.override_parser.types import Sweep

    readable, parsed = hydra_reads(value)
    return readable and (sweeps or not isinstance(parsed, Sweep))


def hydra_quoted(value: str) -> bool:
    """Whether ``value`` is one Hydra quoted string (``'...'`` or ``"..."``; not ``'a'b'``)."""
    quoted = len(value) >= 2 and value[0] in "'\"" and value[-1] == value[0]
    return quoted and isinstance(hydra_reads(value)[1], str)


def hydra_quote(text: str, literal: bool = False) -> str:
    """``text`` as a Hydra quoted value: quotes, and the backslashes before them and at the end, escaped.
    ``literal``: OmegaConf reads it back as exactly ``text`` (``${`` is not an interpolation)."""
    if literal:
        text = re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", text)
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    text = re.sub(r"(\\+)\Z", lambda m: m.group(1) * 2, text)
    return f"'{text}'"


def run_and_exit(main: Callable[[], Any]) -> NoReturn:
    """Runs an entry point, then ends the process as the interpreter would, less its final teardown.

    After torch and Lightning are imported, Python's finalization (clearing every module, collecting the
    heap) takes 2-3 s on a 2-core machine: every command, and each DDP rank, ended that much later than
    its work. Everything a normal exit does for the program still runs first: other non-daemon threads
    are joined (``threading._shutdown``, which also stops idle thread pools), ``atexit`` handlers run
    (loggers, W&B, multiprocessing's clean-up), the standard streams are flushed; the exit status is
    the same. An exception other than ``SystemExit`` ends the process the usual way (with its traceback).

    An override Hydra cannot apply (``model.lrr=0.1``, ``model=ganx``) is one line naming the closest option
    (:func:`~genlab.checks.composition_error`): ``HYDRA_FULL_ERROR`` is held at 1 while the config is composed,
    so Hydra raises it here instead of printing it, and set back as the user had it once the job starts.
    """
    _typed_full_error[:] = [os.environ.get(FULL_ERROR_ENV)]
    os.environ[FULL_ERROR_ENV] = "1"  # Hydra raises an override it cannot apply, not printing five lines
    try:
        main()
        code: Any = 0
    except SystemExit as stop:
        code = stop.code
    except (HydraException, OmegaConfBaseException) as error:
        typed = _typed_full_error[0] if _typed_full_error else "1"
        if typed == "1":  # raised by the job, or the user asked for tracebacks
            raise
        _restore_full_error()
        print(f"Error: {composition_error(error)}", file=sys.stderr, flush=True)
        code = 1
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is None:  # not CPython: the ordinary exit
        sys.exit(code)
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # as ``sys.exit("message")`` does
        code = 1
    shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (`| head`) or stream
            stream.flush()
    os._exit(code or 0)


def _restore_full_error() -> None:
    """The user's ``HYDRA_FULL_ERROR`` again, once the config is composed (see :func:`run_and_exit`)."""
    if _typed_full_error:
        typed = _typed_full_error.pop()
        if typed is None:
            os.environ.pop(FULL_ERROR_ENV, None)
        else:
            os.environ[FULL_ERROR_ENV] = typed


def fail(message: str) -> None:
    """Stops the command with one line: for checks that run before Hydra starts a job."""
    print(f"Error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def check_creatable(directory: str, key: str) -> None:
    """``directory`` can be created: its nearest existing ancestor is a writable folder (nothing is made)."""
    path = Path(directory).expanduser().absolute()
    ancestor = next(p for p in (path, *path.parents) if p.exists())
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        fail(
            f"Cannot create the output dir {path} ({ancestor} is not a writable folder); point {key} at a writable location."
        )


class StartupChecks(Callback):
    """Hydra callback: what would fail before a job starts (output dir, launcher) stops with one line."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_creatable(config.hydra.run.dir, "hydra.run.dir (or paths.log_dir)")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_creatable(config.hydra.sweep.dir, "hydra.sweep.dir (or paths.log_dir)")
        target = str(OmegaConf.select(config, "hydra.launcher._target_") or "")
        if "SlurmLauncher" in target and shutil.which("sbatch") is None:
            fail(
                "hydra/launcher=slurm submits each job with SLURM's sbatch, which this machine lacks: run the "
                "command on the cluster's login node, or launch here with hydra/launcher=basic or joblib."
            )
