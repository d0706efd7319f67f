"""Is the data loader the bottleneck? Per image datamodule: train-loader images/s (the datamodule's default
num_workers/pin_memory, a few warm-up batches then a fixed number timed) against the images/s of the
default GAN's training steps (one D and one G step per batch, trainer.fit on CPU) at the same batch size,
resolution and channels. Ratio = loader / model; above 1 the model, not the loader, sets the pace.

Config and nets come from conf/ (hydra compose of train.yaml with data=<name>, model=gan). digits is
bundled, mnist is read from $GENLAB_SHARED/data (default ../shared/data); fashion_mnist, cifar10, celeba
and image_folder are written to a temp dir in their on-disk layouts by tests/datasets.py's writers.

    python bench/data_loading.py            # ~1000 images per written dataset, 20 timed batches, 3 GAN steps
    python bench/data_loading.py --quick    # ~300 images, 4 timed batches, 1 GAN step (CI)

Two more measurements: start-up of an image folder of tiny PNGs (``--folder-images``, default 100k; quick 3k):
the first start (listing + decoding every file once, the check for corrupt files) against the second (the
cached index) and the plain listing genlab did before; and streaming: images/s of ``data=webdataset`` over
shards of MNIST written by src/shard.py (20k images, 2 workers) against the in-memory MNIST loader; and
4000x3000 JPEG photos at 64 px: image_folder's reduced-scale JPEG decode against a full decode.

Writes bench/results/data_loading[_quick].json and prints the minimum ratio last. Both rates are measured
alone: during training the two share this machine's cores.
"""

import io
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
from PIL import Image
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, SHARED, BatchTimer, compose_config, compose_train  # noqa: E402
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


def folder_startup(tmp: Path, n: int) -> dict:
    """Seconds of the plain listing, the first start (list + decode all) and the second (cached index)."""
    from genlab.data.file_index import index_images

    folder = tmp / "tiny"
    rng = np.random.default_rng(0)
    variants = []
    for _ in range(16):  # tiny PNGs, a few different ones
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, "PNG")
        variants.append(buf.getvalue())
    for i in range(n):
        sub = folder / f"{i // 1000:04d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True)
        (sub / f"{i:07d}.png").write_bytes(variants[i % len(variants)])
    start = time.perf_counter()
    listed = sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".png")
    listing = time.perf_counter() - start
    times = []
    for _ in range(2):
        start = time.perf_counter()
        index = index_images(folder, tmp / "index_cache")
        times.append(time.perf_counter() - start)
    assert len(index.files) == len(listed) == n and index.cached
    return {
        "images": n,
        "plain_listing_s": round(listing, 2),
        "first_start_s": round(times[0], 2),
        "second_start_s": round(times[1], 3),
        "second_vs_listing": round(times[1] / listing, 3),
    }


def stream_vs_memory(tmp: Path, n: int, batches: int) -> dict:
    """Train-loader images/s of data=webdataset over MNIST shards vs the in-memory MNIST loader."""
    from genlab.data.images import MNISTDataModule
    from genlab.data.shards import write_shards
    from genlab.data.stream import ShardedImageDataModule

    overrides = [
        f"data.root={SHARED / 'data'}",
        f"out={tmp / 'shards'}",
        f"max_samples={n}",
        "shard_size=2000",
    ]
    cfg = compose_config("shard", [*overrides, "splits=[train,val]", f"paths.output_dir={tmp}"])
    write_shards(cfg)
    shards = n // 2000 + bool(n % 2000)
    stream = ShardedImageDataModule(
        urls=str(tmp / "shards" / f"train-{{000000..{shards - 1:06d}}}.tar"),
        val_urls=str(tmp / "shards" / "val-000000.tar"),
        resolution=32,
        channels=1,
        batch_size=256,
        num_workers=2,
    )
    memory = MNISTDataModule(root=str(SHARED / "data"), resolution=32, channels=1, batch_size=256)
    rates = {}
    for name, dm in (("webdataset", stream), ("mnist_in_memory", memory)):
        dm.setup("fit")
        rates[name] = round(loader_rate(dm, 2, batches), 1)
    return {**rates, "ratio": round(rates["webdataset"] / rates["mnist_in_memory"], 2), "shard_images": n}


def large_photos(tmp: Path, n: int) -> dict:
    """Images/s of image_folder's decode of 4000x3000 JPEGs at 64 px: a reduced-scale JPEG decode (``draft``)
    against the full decode that the same geometry without it costs (a pixel crop of the short side)."""
    from genlab.data.images import ImageFiles

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:3000, 0:4000]
    smooth = np.stack([np.sin(x / 300), np.cos(y / 200), np.sin((x + y) / 500)], -1) * 100 + 128
    files = []
    for i in range(n):
        files.append(tmp / f"photo{i}.jpg")
        pixels = np.roll(smooth, 97 * i, axis=1) + rng.normal(0, 10, smooth.shape)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(files[-1], quality=90)
    rates, images = {}, {}
    for name, crop in (("draft", None), ("full_decode", 3000)):
        dataset = ImageFiles(files, 3, 64, crop=crop)
        start = time.perf_counter()
        images[name] = torch.stack([dataset[i] for i in range(n)])
        rates[name] = round(n / (time.perf_counter() - start), 2)
    return {
        **{f"{k}_images_per_s": v for k, v in rates.items()},
        "ratio": round(rates["draft"] / rates["full_decode"], 2),
        "max_abs_pixel_diff": round(
            float((images["draft"] - images["full_decode"]).abs().max()), 4
        ),  # in [-1, 1]
        "photos": n,
    }


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--folder-images", type=int, default=None, help="tiny images of the start-up folder")
    args = parser.parse_args()
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
            overrides = [
                f"data={name}",
                "model=gan",
                f"paths.output_dir={tmp}",
                f"paths.cache_dir={tmp}/cache",
            ]
            cfg = compose_train([*overrides, *([f"data.root={root}"] if root else [])])
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
        folder = folder_startup(Path(tmp), args.folder_images or (3000 if args.quick else 100_000))
        streaming = stream_vs_memory(Path(tmp), 4000 if args.quick else 20_000, batches)
        photos = large_photos(Path(tmp), 2 if args.quick else 8)
    slowest = min(rows, key=lambda k: rows[k]["ratio"])
    result = {
        "folder_startup": folder,
        "streaming": streaming,
        "large_photos": photos,
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
        f"folder of {folder['images']} images: first start {folder['first_start_s']} s, second (cached index) "
        f"{folder['second_start_s']} s, plain listing {folder['plain_listing_s']} s; webdataset "
        f"{streaming['webdataset']} vs in-memory {streaming['mnist_in_memory']} images/s; 4000x3000 JPEGs at 64 px "
        f"{photos['ratio']}x faster with a reduced-scale decode; "
        f"min loader/model ratio {result['min_ratio']:.2f} ({slowest}, "
        f"{rows[slowest]['num_workers']} workers): the loader is {'not ' * (result['min_ratio'] > 1)}"
        "the bottleneck",
    )


if __name__ == "__main__":
    main()
