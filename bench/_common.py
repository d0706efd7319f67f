"""Shared by the training benches: `src/train.py`'s config composed and run in this process, batch timing."""

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("GENLAB_ROOT", str(ROOT))
SHARED = Path(os.environ.get("GENLAB_SHARED", ROOT.parent / "shared"))  # real data, as for the tests
SHAKESPEARE = SHARED / "data/tinyshakespeare/input.txt"


def compose_config(name: str, overrides: list[str]) -> DictConfig:
    """conf/<name>.yaml with ``overrides``, as `src/<name>.py` composes it."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(name, overrides=overrides)


def compose_train(overrides: list[str]) -> DictConfig:
    """conf/train.yaml with ``overrides``, as `src/train.py` composes it."""
    return compose_config("train", overrides)


@contextlib.contextmanager
def run_dir(cfg: DictConfig) -> Iterator[Path]:
    """Points ``cfg.paths.output_dir`` at a temporary directory, removed on exit."""
    with tempfile.TemporaryDirectory(prefix="genlab_bench_") as out:
        with open_dict(cfg):
            cfg.paths.output_dir = out
        yield Path(out)


def genlab_train(cfg: DictConfig, callbacks: list[pl.Callback] | None = None) -> dict[str, float]:
    """`src/train.py` on ``cfg`` in this process (outputs in a temporary directory); its final metrics."""
    from genlab.pipeline import train

    with run_dir(cfg):
        return train(cfg, extra_callbacks=callbacks)


class BatchTimer(pl.Callback):
    """Wall time from the end of training batch ``start`` to the end of batch ``stop`` (1-based counts).

    Batches are counted here, not with ``trainer.global_step`` (a GAN batch makes two optimizer steps),
    so the window holds ``stop - start`` whole batches with every hook, logging and epoch end between.
    """

    def __init__(self, start: int, stop: int):
        self.start, self.stop = start, stop
        self.batches, self.t0 = 0, 0.0
        self.seconds: float | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.batches += 1
        if self.batches == self.start:
            self.t0 = time.perf_counter()
        elif self.batches == self.stop:
            self.seconds = time.perf_counter() - self.t0


def epochs(loader: Iterable) -> Iterator[Any]:
    """Batches of ``loader`` over endless epochs, the sampler told each epoch's number as Lightning does."""
    epoch = 0
    while True:
        if hasattr(getattr(loader, "sampler", None), "set_epoch"):
            loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def timed_loop(loader: Iterable, step: Callable[[Any, int], None], warmup: int, steps: int) -> float:
    """``step(batch, index)`` over epochs of ``loader``; seconds of batches ``warmup + 1 .. warmup + steps``."""
    t0 = 0.0
    for index, batch in enumerate(epochs(loader), start=1):
        step(batch, index - 1)
        if index == warmup:
            t0 = time.perf_counter()
        elif index == warmup + steps:
            return time.perf_counter() - t0
    raise AssertionError("unreachable: epochs() never ends")
