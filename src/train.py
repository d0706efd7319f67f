"""Train a model: ``python src/train.py model=gan data=mnist trainer=ddp_cpu logger=wandb``."""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from genlab.checks import check_train_config
from genlab.cli import quoted_overrides, report_user_errors, resumed_command, run_and_exit, trainer_overrides

os.environ.setdefault("GENLAB_ROOT", str(Path(__file__).resolve().parents[1]))


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    check_train_config(cfg)  # the config's own mistakes, before torch and Lightning are imported
    from genlab.pipeline import train  # deferred: `--help` and config errors stay fast

    metrics = train(cfg)
    return metrics.get(cfg.optimized_metric) if cfg.get("optimized_metric") else None


if __name__ == "__main__":
    sys.argv[1:] = quoted_overrides(sys.argv[1:])  # text and paths as typed: data.path=~/données/a,b.txt
    sys.argv[1:] = trainer_overrides(sys.argv[1:])  # any Trainer argument as typed: trainer.max_time=...
    sys.argv[1:] = resumed_command(sys.argv[1:])  # ckpt_path=<run> alone: the run's own overrides first
    run_and_exit(main)
