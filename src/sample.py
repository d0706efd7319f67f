"""Sample from a checkpoint: ``python src/sample.py ckpt_path=... num_samples=64 [sampler=ddim steps=50]``."""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from genlab.checks import check_sample_config
from genlab.cli import quoted_overrides, report_user_errors, run_and_exit

os.environ.setdefault("GENLAB_ROOT", str(Path(__file__).resolve().parents[1]))


@hydra.main(version_base="1.3", config_path="../conf", config_name="sample")
@report_user_errors
def main(cfg: DictConfig) -> None:
    check_sample_config(cfg)  # the config's own mistakes, before torch and Lightning are imported
    from genlab.pipeline import sample

    sample(cfg)


if __name__ == "__main__":
    sys.argv[1:] = quoted_overrides(sys.argv[1:])  # text and paths as typed: prompt="To be, or not"
    run_and_exit(main)
