"""Evaluate a checkpoint: ``python src/eval.py ckpt_path=outputs/<run>/checkpoints/last.ckpt``."""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from genlab.checks import check_eval_config
from genlab.cli import (
    checkpoint_overrides,
    quoted_overrides,
    report_user_errors,
    run_and_exit,
    trainer_overrides,
)

os.environ.setdefault("GENLAB_ROOT", str(Path(__file__).resolve().parents[1]))


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
@report_user_errors
def main(cfg: DictConfig) -> None:
    check_eval_config(cfg)  # the config's own mistakes, before torch and Lightning are imported
    from genlab.pipeline import evaluate

    evaluate(cfg)


if __name__ == "__main__":
    args = quoted_overrides(sys.argv[1:])  # text and paths as typed: data.path=~/données/a,b.txt
    args = checkpoint_overrides(args)  # model.beam_size=4: +overrides.model.beam_size=4
    sys.argv[1:] = trainer_overrides(args)  # any Trainer argument as typed: trainer.max_time=...
    run_and_exit(main)
