"""DDP child processes of a Hydra multirun job run that job, not the sweep.

Lightning starts ranks 1.. of ``strategy=ddp`` by re-running the script with the parent's ``sys.argv`` plus
``hydra.run.dir=<run dir>`` (``_hydra_subprocess_cmd``). In a multirun that command is the whole sweep
(``-m seed=1,2``, or ``hparams_search=...``, whose config sets ``hydra.mode: MULTIRUN``): each child then
ran a sweep of its own, wrote its own summary rows and, under Optuna, asked the study for trials of its own
(Lightning #11300, hydra #2070). Here a child of a multirun job gets that job's own overrides, its output
dir and ``hydra.mode=RUN``: one process group per job, one record per job, one sweep. And the process that
launched them leaves nothing behind for the next job (:func:`job_processes`).
"""

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence

import pytorch_lightning as pl
import torch
from lightning_fabric.strategies.launchers import subprocess_script as fabric_launcher
from pytorch_lightning.strategies.launchers import subprocess_script as lightning_launcher
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

_lightning_command = fabric_launcher._hydra_subprocess_cmd
DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")  # set by the launcher


def job_subprocess_cmd(local_rank: int) -> tuple[Sequence[str], str]:
    """The command and working directory of DDP rank ``local_rank``'s process."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from hydra.utils import get_original_cwd, to_absolute_path

    import __main__

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return _lightning_command(local_rank)
    if __main__.__spec__ is None:  # as Lightning finds the script
        script = [sys.executable, to_absolute_path(sys.argv[0])]
    else:
        script = [sys.executable, "-m", __main__.__spec__.name]
    job = [
        *hydra_cfg.overrides.task,
        f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',
        f"hydra.job.name=train_ddp_process_{local_rank}",
        "hydra.output_subdir=null",
        "hydra.mode=RUN",
    ]
    return [*script, *job], get_original_cwd()


def install() -> None:
    """Route Lightning's DDP launcher through :func:`job_subprocess_cmd` (idempotent)."""
    lightning_launcher._hydra_subprocess_cmd = job_subprocess_cmd


@contextlib.contextmanager
def job_processes(trainer: pl.Trainer) -> Iterator[None]:
    """Around a job's fit and test: where this process launched the other ranks, wait for them to exit, end
    the process group and restore the launcher's environment variables. Otherwise the next job of a
    multirun would find ``LOCAL_RANK`` set, launch no ranks, and reuse a process group whose peers are gone."""
    before = {key: os.environ.get(key) for key in DDP_ENV}
    try:
        yield
    finally:
        launcher = trainer.strategy.launcher
        children = launcher.procs if isinstance(launcher, _SubprocessScriptLauncher) else []
        if children:
            for child in children:
                try:
                    child.wait(timeout=120)
                except Exception:
                    child.kill()
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
            for key, value in before.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
