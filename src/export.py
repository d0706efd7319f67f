"""Export a run as a self-contained folder: ``python src/export.py ckpt_path=outputs/<run> [out=...] [hub_repo=...]``."""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from genlab.cli import quoted_overrides, report_user_errors, run_and_exit

os.environ.setdefault("GENLAB_ROOT", str(Path(__file__).resolve().parents[1]))


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from genlab.export import export_run

    export_run(cfg)


if __name__ == "__main__":
    sys.argv[1:] = quoted_overrides(sys.argv[1:])  # paths as typed: out=~/données/shards
    run_and_exit(main)
