"""Is the data loader the bottleneck? Per image datamodule: train-loader images/s (the datamodule's default
num_workers/pin_memory, a few warm-up batches then a fixed number timed) against the images/s of the
default GAN's training steps (one D and one G step per batch, trainer.fit on CPU) at the same batch size,
resolution and channels. Ratio = loader / model; above 1 the model, not the loader, sets the pace.

Config and nets come from conf/ (hydra compose of train.yaml with data=<name>, model=gan). digits is
bundled, mnist is read from $GENLAB_SHARED/data (default ../shared/data); fashion_mnist, cifar10, celeba
and image_folder are written to a temp dir in their on-disk layouts by tests/datasets.py's writers.

    python bench/data_loading.py            # ~1000 images per written dataset, 20 timed batches, 3 GAN steps
    python bench/data_loading.py --quick    # ~300 images, 4 timed batches, 1 GAN step (CI)

Writes bench/results/data_loading[_quick].json and prints the minimum ratio last. Both rates are measured
alone: during training the two share this machine's cores.
"""

import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, SHARED, BatchTimer, compose_train  # noqa: E402
from _results import bench_parser, report  # noqa: E402

sys.path.insert(0, str(ROOT))
from tests.datasets import write_celeba, write_cifar10, write_idx, write_image_folder  # noqa: E402

DATAMODULES = ("digits", "mnist", "fashion_mnist", "cifar10", "celeba", "image_folder")


def write_datasets(tmp: Path, n: int) -> dict[str, Path]:
    """data.root per datamodule; the written datasets hold about ``n`` training images each."""
    rng = np.random.default_rng(0)
    for prefix, size in (("train", n), ("t10k", n // 10)):
        write_idx(
            tmp / "fashion_mnist" / "FashionMNIST" / "raw", prefix, rng.integers(0, 256, (size, 28, 28))
        )
    write_cifar10(tmp / "cifar10", per_batch=n // 5)
    write_celeba(tmp / "celeba" / "celeba" / "img_align_celeba", n=n)
    for i in range(n // 6):  # 6 images (50x40 PNG) in nested folders each
        write_image_folder(tmp / "image_folder" / str(i))
    roots = {name: tmp / name for name in ("fashion_mnist", "cifar10", "celeba", "image_folder")}
    return {"mnist": SHARED / "data", **roots}


def cycle(loader: DataLoader) -> Iterator[torch.Tensor]:
    while True:
        yield from loader


def loader_rate(dm: pl.LightningDataModule, warmup: int, batches: int) -> float:
    """Train-loader images/s over ``batches`` batches after ``warmup`` (worker start-up, first decodes)."""
    stream = cycle(dm.train_dataloader())
    for _ in range(warmup):
        next(stream)
    start, images = time.perf_counter(), 0
    for _ in range(batches):
        images += len(next(stream))
    return images / (time.perf_counter() - start)


def model_rate(cfg: DictConfig, warmup: int, steps: int) -> float:
    """Images/s of the GAN's training steps on one in-memory batch, repeated (no loading cost)."""
    torch.manual_seed(0)
    data = cfg.data
    batch = torch.rand(data.batch_size, data.channels, data.resolution, data.resolution) * 2 - 1
    timer = BatchTimer(warmup, warmup + steps)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        callbacks=[timer],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = DataLoader([batch] * (warmup + steps), batch_size=None)  # the same batch, as is
    trainer.fit(instantiate(cfg.model, _convert_="all"), train_dataloaders=loader)
    return steps * data.batch_size / timer.seconds


def main() -> None:
    args = bench_parser(__doc__).parse_args()
    n, warmup, batches, steps = (300, 2, 4, 1) if args.quick else (1020, 2, 20, 3)
    for message in (
        ".*does not have many workers.*",
        ".*non-writable.*",
        ".*eval mode.*",
        ".*no `val_dataloader`.*",
    ):
        warnings.filterwarnings("ignore", message=message)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)

    rows, model_rates = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        roots = write_datasets(Path(tmp), n)
        written_s = time.perf_counter() - start
        for name in DATAMODULES:
            root = roots.get(name)
            cfg = compose_train([f"data={name}", "model=gan", *([f"data.root={root}"] if root else [])])
            dm = instantiate(cfg.data, _convert_="all")
            dm.setup("fit")
            key = (dm.batch_size, dm.channels, dm.resolution)
            if key not in model_rates:
                model_rates[key] = model_rate(cfg, 1, steps)
            loader = loader_rate(dm, warmup, batches)
            rows[name] = {
                "train_images": len(dm.train_set),
                "batch_size": dm.batch_size,
                "shape": f"{dm.channels}x{dm.resolution}x{dm.resolution}",
                "num_workers": dm.num_workers,
                "pin_memory": dm.pin_memory,
                "loader_images_per_s": round(loader, 1),
                "model_images_per_s": round(model_rates[key], 1),
                "ratio": round(loader / model_rates[key], 2),
            }
    slowest = min(rows, key=lambda k: rows[k]["ratio"])
    result = {
        "datamodules": rows,
        "min_ratio": rows[slowest]["ratio"],
        "min_ratio_datamodule": slowest,
        "timed_batches": batches,
        "gan_steps": steps,
        "written_datasets_seconds": round(written_s, 1),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    report(
        "data_loading",
        args.quick,
        result,
        f"min loader/model ratio {result['min_ratio']:.2f} ({slowest}, "
        f"{rows[slowest]['num_workers']} workers): the loader is {'not ' * (result['min_ratio'] > 1)}"
        "the bottleneck",
    )


if __name__ == "__main__":
    main()
