"""Exact resume and preemption: RNG state in checkpoints, atomic checkpoint files, save on SIGTERM/SIGINT."""

import logging
import random
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities.exceptions import SIGTERMException

from genlab.utils.files import atomic_save

log = logging.getLogger(__name__)
RNG_KEY = "genlab_rng"


def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and ints (loadable with ``torch.load(weights_only=True)``)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "gauss": [has_gauss, gauss]},
        "python": {"version": version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Sets the states ``state`` holds (a DDP rank's restored state holds torch's only)."""
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        numpy = state["numpy"]
        keys = numpy["keys"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, numpy["pos"], *numpy["gauss"]))
    if "python" in state:
        python = state["python"]
        random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class OptimizerSettings(pl.Callback):
    """A resumed run trains with the optimizer settings of its config. Lightning restores every param group's
    settings with the optimizer's state, so ``ckpt_path=<run> model.lr=1e-5`` (as a divergence's message
    advises) went on at the checkpoint's rate. After that restore, each group takes the settings its optimizer
    was configured with (``weight_decay``, ``betas``, ...), and its learning rate the configured base rate at
    the schedule's position (the restored rate times new base / old base); what changed is logged."""

    def __init__(self):
        self.configured: list[list[dict[str, Any]]] | None = None

    def on_fit_start(self, trainer, pl_module) -> None:  # optimizers configured, checkpoint not yet restored
        groups = [
            [{k: v for k, v in g.items() if k != "params"} for g in o.param_groups]
            for o in trainer.optimizers
        ]
        self.configured = groups if trainer.ckpt_path else None

    def on_train_start(self, trainer, pl_module) -> None:  # after the restore
        if self.configured is None:
            return
        changed: dict[str, str] = {}
        for optimizer, groups in zip(trainer.optimizers, self.configured):
            for group, wanted in zip(optimizer.param_groups, groups):
                for key, value in wanted.items():
                    if key not in ("lr", "initial_lr") and comparable(group.get(key)) != comparable(value):
                        changed[key] = f"{key} {group.get(key)} -> {value}"
                        group[key] = value
                base, restored = wanted.get("initial_lr", wanted["lr"]), group.get("initial_lr", group["lr"])
                if restored and base != restored:
                    changed["lr"] = f"lr {restored} -> {base}"
                    group["lr"] *= base / restored
                    group["initial_lr"] = base
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            scheduler.base_lrs = [g.get("initial_lr", g["lr"]) for g in scheduler.optimizer.param_groups]
            scheduler._last_lr = [g["lr"] for g in scheduler.optimizer.param_groups]
        if changed:
            log.info("Resumed with the optimizer settings of the config: %s", ", ".join(changed.values()))
        self.configured = None


def comparable(value: Any) -> Any:
    """``value`` with tuples as lists: a checkpoint may hold either for the same setting (``betas``)."""
    return list(value) if isinstance(value, tuple) else value


class RNGState(pl.Callback):
    """Saves the RNG states with every checkpoint and restores them on resume.

    With them (and Lightning's own optimizer, scheduler, EMA and loop state) a resumed run draws the same
    shuffling and noise as one that never stopped. Under DDP every rank saves (checkpoints are written by all
    ranks' hooks, by rank 0's file): each rank's torch generator (and its CUDA one) is gathered into
    ``torch_per_rank``, and a resume on the same number of ranks gives each its own back; NumPy's and Python's
    generators (which genlab's training does not draw from) are restored in single-process runs only.
    """

    def __init__(self):
        self.restored: dict | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        state = rng_state()
        if trainer.world_size > 1:
            device = pl_module.device
            state["torch_per_rank"] = trainer.strategy.all_gather(state["torch"].to(device)).cpu()
            if device.type == "cuda":
                cuda = torch.cuda.get_rng_state(device).to(device)
                state["cuda_per_rank"] = trainer.strategy.all_gather(cuda).cpu()
        checkpoint[RNG_KEY] = state

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        state = checkpoint.get(RNG_KEY)
        if state is None:
            return
        if trainer.world_size == 1:
            self.restored = state
        elif len(state.get("torch_per_rank", ())) == trainer.world_size:
            # clone: a row of the gathered tensor is a view, and set_rng_state reads its storage from the start
            self.restored = {"torch": state["torch_per_rank"][trainer.global_rank].clone()}
            if "cuda_per_rank" in state and pl_module.device.type == "cuda":
                self.restored["cuda_device"] = state["cuda_per_rank"][trainer.global_rank].clone()

    def on_train_start(self, trainer, pl_module) -> None:
        if self.restored is not None:  # after the sanity check, which draws random numbers too
            set_rng_state(self.restored)
            if "cuda_device" in self.restored:
                torch.cuda.set_rng_state(self.restored["cuda_device"], pl_module.device)
            self.restored = None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same directory, then renames it into place.

    A process killed mid-write (``kill -9``, OOM) leaves the previous checkpoint intact.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        fs = get_filesystem(path)
        if fs.protocol not in ("file", ("file", "local")):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_save(checkpoint, path)


class Preemption(pl.Callback):
    """On SIGTERM (preemption) or SIGINT (Ctrl-C) finish the current batch, save ``last.ckpt``, exit.

    Lightning turns SIGTERM into a stop at the next batch boundary; SIGINT is routed the same way
    (a second Ctrl-C interrupts at once). Resume with ``ckpt_path=<run dir>`` or ``ckpt_path=last``.
    """

    def __init__(self, dirpath: str):
        self.path = Path(dirpath) / "last.ckpt"
        self._previous_sigint = None

    def on_train_start(self, trainer, pl_module) -> None:
        def stop_after_batch(signum, frame) -> None:
            log.warning("SIGINT: saving a checkpoint after this batch (Ctrl-C again to abort now)")
            signal.signal(signal.SIGINT, signal.default_int_handler)
            trainer._signal_connector.received_sigterm = True

        try:
            self._previous_sigint = signal.signal(signal.SIGINT, stop_after_batch)
        except ValueError:  # not the main thread
            self._previous_sigint = None

    def on_train_end(self, trainer, pl_module) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit":
            trainer.save_checkpoint(self.path)
            log.warning(
                "Stopped by a signal at step %d; saved %s. Resume with ckpt_path=%s",
                trainer.global_step,
                self.path,
                self.path.parent.parent,
            )


class FinalCheckpoint(Checkpoint):
    """Writes ``last.ckpt`` where training ends at a step that no checkpoint holds. The checkpoint callbacks
    save after validations, so a run that ``trainer.max_steps``, ``max_epochs`` or ``max_time`` ends between
    validations (e.g. before the first of ``val_check_interval=250``) kept nothing of its training. Lightning
    ends the epoch when it stops, and as a :class:`Checkpoint` this runs at that epoch's end where Lightning runs
    its checkpoint callbacks: after the module's hook and after theirs, whose saves it sees. The pipeline adds
    it beside configured ``ModelCheckpoint`` callbacks."""

    def __init__(self, dirpath: str):
        self.path = Path(dirpath) / "last.ckpt"
        self.saved_step = -1
        self.written: Path | None = None  # the checkpoint this wrote, if it did

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        self.saved_step = trainer.global_step

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        unsaved = trainer.global_step > 0 and self.saved_step != trainer.global_step
        if unsaved and ends_fit(trainer) and not trainer.fast_dev_run:
            trainer.save_checkpoint(self.path)
            self.written = self.path


def ends_fit(trainer: pl.Trainer) -> bool:
    """Whether the training epoch ending now is the run's last: ``max_steps`` or ``max_epochs`` reached, or a
    stop asked for (``max_time``, early stopping)."""
    steps = trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps
    epochs = trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= trainer.max_epochs
    return steps or epochs or trainer.should_stop
