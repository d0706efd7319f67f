"""Hydra callback: a summary of every multirun job (overrides, status, final metrics) in the sweep dir.

Each job appends one JSON line to ``<sweep dir>/jobs.jsonl`` when it ends (this works with
launchers that run jobs in other processes); at the end of the multirun the lines are
collected into ``summary.json`` and ``summary.csv``.
"""

import csv
import json
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepSummary(Callback):
    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode.name != "MULTIRUN":
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        metrics_file = job_dir / "metrics.json"
        row = {
            "job": config.hydra.job.num,
            "overrides": " ".join(job_return.overrides or []),
            "status": "completed" if job_return.status == JobStatus.COMPLETED else "failed",
            "error": None if job_return.status == JobStatus.COMPLETED else repr(job_return._return_value),
            "dir": str(job_dir),
            "metrics": json.loads(metrics_file.read_text()) if metrics_file.is_file() else {},
        }
        with open(Path(config.hydra.sweep.dir) / "jobs.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs_file = sweep_dir / "jobs.jsonl"
        if not jobs_file.is_file():
            return
        rows = sorted(
            (json.loads(line) for line in jobs_file.read_text().splitlines()), key=lambda r: r["job"]
        )
        (sweep_dir / "summary.json").write_text(json.dumps(rows, indent=2))
        metric_keys = sorted({k for r in rows for k, v in r["metrics"].items() if not isinstance(v, dict)})
        with open(sweep_dir / "summary.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["job", "status", "overrides", *metric_keys, "error"])
            for r in rows:
                writer.writerow(
                    [
                        r["job"],
                        r["status"],
                        r["overrides"],
                        *(r["metrics"].get(k) for k in metric_keys),
                        r["error"],
                    ]
                )
