"""Sharded image data streamed from WebDataset tar shards (local paths or http(s) URLs), with exact resume.

Shards hold one sample per key (``000123.png`` and, with labels, ``000123.cls``), WebDataset's layout;
``src/shard.py`` writes them from any image datamodule together with ``index.json`` (each shard's sample
count, the class names), which must lie beside the shards. Reading uses the ``webdataset`` package (brace
expansion, ``gopen`` for local files and ``pipe:`` commands, its tar iteration and key grouping; http(s) URLs
are read with Python's own ``urllib``, so no ``curl`` is needed); the split across
processes is genlab's own, because WebDataset's (by shard, per node and worker) gives processes unequal
numbers of samples, which hangs DDP at the end of an epoch or drops samples.

Split: each epoch the shard order is shuffled from ``(seed, epoch)`` and the stream of all N samples is cut
into contiguous ranges, one per rank (``N // world`` samples, one more for the first ``N % world`` ranks),
then each rank's batches into contiguous runs, one per DataLoader worker. Every sample is read once per
epoch, by one process, which opens only the shards its range overlaps. Every rank serves the same number of
batches: ``ceil((N // world) / batch_size)``, the last of them taking the rest (``batch_size + 1`` at most),
so nothing is dropped. Within a worker a shuffle buffer of ``shuffle_buffer`` samples, seeded by
``(seed, epoch, rank, worker)``, reorders the samples before they are decoded and batched.

Exact resume: the datamodule's ``state_dict`` (which Lightning stores in every checkpoint and restores before
the loaders are built) holds the training loader's epoch and batches served; on resume each worker replays
its range (undecoded) up to the batches already served, so the run sees exactly the remaining batches of the
uninterrupted one. (Lightning's own stateful-loader hook is not used: it is skipped when ``configure_optimizers``
reads ``trainer.estimated_stepping_batches``, which builds the loader before the loop state is restored.)
"""

import hashlib
import io
import itertools
import json
import math
import random
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from genlab.data.base import GenlabDataModule
from genlab.data.pixels import RGB, WHITE, background_colour, convert
from genlab.errors import ConfigError, DataError, DatasetNotFoundError

INDEX = "index.json"
IMAGE_KEYS = ("png", "jpg", "jpeg", "webp")


def expand_urls(pattern: str) -> list[str]:
    """The shards of a brace pattern (``shards/train-{000000..000009}.tar``; several joined by ``::``)."""
    from braceexpand import braceexpand

    return [u for part in pattern.split("::") for u in braceexpand(part)]


def _is_url(path: str) -> bool:
    return "://" in path


def _parent_and_name(url: str) -> tuple[str, str]:
    head, _, name = url.rpartition("/")
    return head or ".", name


def read_index(urls: list[str]) -> tuple[list[int], list[str] | None]:
    """(sample count of each shard, class names or None) from the ``index.json`` beside the shards."""
    counts, names, indexes = [], None, {}
    for url in urls:
        parent, name = _parent_and_name(url)
        if parent not in indexes:
            where = f"{parent}/{INDEX}"
            try:
                with open_shard(where) as f:
                    indexes[parent] = json.loads(f.read())
            except Exception as e:  # OSError for files and URLs, ValueError for a malformed URL or JSON
                raise DatasetNotFoundError(
                    f"No shard index at {where} ({type(e).__name__}): write shards with "
                    "`python src/shard.py data=<image data> out=<folder>`, which puts index.json beside them."
                ) from None
        shards = indexes[parent]["shards"]
        if name not in shards:
            raise DatasetNotFoundError(
                f"{url} is not listed in {parent}/{INDEX}: is the brace pattern right?"
            )
        counts.append(int(shards[name]))
        names = indexes[parent].get("class_names", names)
    return counts, names


def open_shard(url: str) -> IO[bytes]:
    """A binary stream of ``url``: http(s) through ``urllib``, anything else (paths, ``pipe:``) through gopen."""
    if url.startswith(("http://", "https://")):
        return urllib.request.urlopen(url, timeout=60)
    from webdataset.gopen import gopen

    return gopen(url, "rb")


def decode_image(data: bytes, channels: int, resolution: int, background: RGB = WHITE) -> torch.Tensor:
    """Encoded image bytes -> float (channels, resolution, resolution) in [-1, 1], transparency flattened
    onto ``background``."""
    with Image.open(io.BytesIO(data)) as img:
        img = convert(img, "L" if channels == 1 else "RGB", background)
        if img.size != (resolution, resolution):
            img = img.resize((resolution, resolution), Image.BILINEAR)
        pixels = np.asarray(img, dtype=np.uint8).reshape(img.size[1], img.size[0], channels)
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


@dataclass(frozen=True)
class Plan:
    """Where one process's batches of one epoch come from: shards in epoch order and each worker's range."""

    shards: list[int]  # shard indices in this epoch's order
    batch_sizes: list[int]  # this rank's batches
    start: int  # this rank's first sample in the epoch's stream

    def worker_batches(self, worker: int, workers: int) -> range:
        n = len(self.batch_sizes)
        return range(worker * n // workers, (worker + 1) * n // workers)


def plan_epoch(
    counts: list[int], seed: int, epoch: int, shuffle: bool, rank: int, world: int, batch: int
) -> Plan:
    """This rank's share of an epoch (see the module's docstring)."""
    order = list(range(len(counts)))
    if shuffle:
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
    total = sum(counts)
    share, extra = divmod(total, world)
    if share == 0:
        raise ConfigError(f"The shards hold {total} samples, fewer than the {world} processes reading them.")
    size = share + (rank < extra)
    start = rank * share + min(rank, extra)
    n_batches = math.ceil(share / batch)
    sizes = [batch] * (n_batches - 1) + [size - (n_batches - 1) * batch]
    return Plan(order, sizes, start)


def served_per_worker(batches: int, per_worker: list[int]) -> list[int]:
    """How many batches each worker had served when a DataLoader had returned ``batches`` (it takes them
    round-robin over the workers that still have some, in worker order)."""
    served = [0] * len(per_worker)
    for _ in range(batches):
        for w in sorted(range(len(per_worker)), key=lambda w: (served[w], w)):
            if served[w] < per_worker[w]:
                served[w] += 1
                break
    return served


class ShardStream(IterableDataset):
    """Batches of (images[, labels]) from tar shards; the epoch, rank and resume point are set by
    :class:`StreamLoader` before each pass."""

    def __init__(
        self,
        urls: list[str],
        counts: list[int],
        batch_size: int,
        channels: int,
        resolution: int,
        labels: bool,
        shuffle: bool,
        shuffle_buffer: int,
        seed: int,
        background: RGB = WHITE,
    ):
        self.urls, self.counts, self.background = urls, counts, background
        self.batch_size, self.channels, self.resolution = batch_size, channels, resolution
        self.labels, self.shuffle, self.shuffle_buffer, self.seed = labels, shuffle, shuffle_buffer, seed
        self.epoch, self.skip_batches, self.rank, self.world = 0, 0, 0, 1

    def plan(self) -> Plan:
        return plan_epoch(
            self.counts, self.seed, self.epoch, self.shuffle, self.rank, self.world, self.batch_size
        )

    def __len__(self) -> int:
        """Batches per rank and epoch (the same on every rank)."""
        return math.ceil(sum(self.counts) // _rank_world()[1] / self.batch_size)

    def _samples(self, start: int, stop: int, shards: list[int]) -> Iterator[dict[str, Any]]:
        """Samples ``start`` ... ``stop - 1`` of the epoch's stream (raw bytes), opening only their shards."""
        from webdataset.tariterators import group_by_keys, tar_file_iterator

        position = 0
        for shard in shards:
            count = self.counts[shard]
            if position + count <= start:
                position += count
                continue
            if position >= stop:
                return
            url = self.urls[shard]
            with open_shard(url) as stream:
                files = ({**file, "__url__": url} for file in tar_file_iterator(stream))
                for sample in group_by_keys(files):
                    if position >= stop:
                        return
                    if position >= start:
                        yield sample
                    position += 1

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        plan = self.plan()
        offsets = np.cumsum([0, *plan.batch_sizes]).tolist()
        mine = plan.worker_batches(worker, workers)
        if not mine:
            return
        per_worker = [len(plan.worker_batches(w, workers)) for w in range(workers)]
        skip = served_per_worker(self.skip_batches, per_worker)[worker]
        start, stop = plan.start + offsets[mine.start], plan.start + offsets[mine.stop]
        rng = random.Random(f"{self.seed}-{self.epoch}-{self.rank}-{worker}")  # str seeds hash stably
        samples = self._shuffled(self._samples(start, stop, plan.shards), rng)
        for i in mine:
            chunk = list(itertools.islice(samples, plan.batch_sizes[i]))
            if len(chunk) < plan.batch_sizes[i]:
                raise DataError(
                    f"The shards of {self.urls[0]} ... hold fewer samples than their index.json counts: write "
                    "them again with src/shard.py (or correct index.json)."
                )
            if i - mine.start >= skip:
                yield self._collate(chunk)

    def _shuffled(self, samples: Iterator[dict], rng: random.Random) -> Iterator[dict]:
        """A shuffle buffer (no reordering with ``shuffle=False`` or a buffer of 0 or 1)."""
        if not (self.shuffle and self.shuffle_buffer > 1):
            yield from samples
            return
        buffer: list[dict] = []
        for sample in samples:
            buffer.append(sample)
            if len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(rng.randrange(len(buffer)))
        while buffer:
            yield buffer.pop(rng.randrange(len(buffer)))

    def _collate(self, chunk: list[dict]) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        images = torch.stack(
            [decode_image(_image_bytes(s), self.channels, self.resolution, self.background) for s in chunk]
        )
        if not self.labels:
            return images
        return images, torch.tensor([int(s["cls"]) for s in chunk])


def _image_bytes(sample: dict) -> bytes:
    key = next((k for k in IMAGE_KEYS if k in sample), None)
    if key is None:
        raise DatasetNotFoundError(
            f"Sample {sample.get('__key__')} of {sample.get('__url__')} holds no image."
        )
    return sample[key]


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class StreamLoader(DataLoader):
    """A DataLoader over a :class:`ShardStream` that knows its position (the epoch and the batches served in
    it) and, given one by :meth:`resume_at`, serves the rest of that epoch on its next pass."""

    def __init__(self, stream: ShardStream, num_workers: int = 0, **kwargs):
        super().__init__(
            stream,
            batch_size=None,
            num_workers=num_workers,
            persistent_workers=False,  # each pass sends the stream its epoch and resume point
            generator=torch.Generator().manual_seed(stream.seed),  # worker seeds off the global RNG
            **kwargs,
        )
        self._epoch, self._served, self._resume = -1, 0, None

    def __iter__(self):
        stream: ShardStream = self.dataset
        if self._resume is not None:
            (self._epoch, self._served), self._resume = self._resume, None
        else:
            self._epoch, self._served = self._epoch + 1, 0
        stream.epoch, stream.skip_batches = self._epoch, self._served
        stream.rank, stream.world = _rank_world()
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def position(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches": self._served}

    def resume_at(self, position: dict[str, int]) -> None:
        epoch, served = position["epoch"], position["batches"]
        if served >= len(self):  # saved at the end of an epoch: the next pass is the next epoch
            epoch, served = epoch + 1, 0
        self._resume = (epoch, served)


class ShardedImageDataModule(GenlabDataModule):
    """``data=webdataset``: images (and labels) streamed from tar shards; see the module's docstring."""

    name = "webdataset"
    modality: ClassVar[str] = "image"

    def __init__(
        self,
        urls: str | None = None,
        val_urls: str | None = None,
        test_urls: str | None = None,
        resolution: int = 32,
        channels: int = 3,
        batch_size: int = 64,
        shuffle_buffer: int = 1000,
        num_workers: int = 2,
        labels: bool = False,
        seed: int = 0,
        background: str = "white",
    ):
        super().__init__()
        if urls is None or val_urls is None:
            raise ConfigError(
                "data=webdataset needs data.urls and data.val_urls: brace patterns of .tar shards, e.g. "
                "data.urls='shards/train-{000000..000009}.tar' data.val_urls='shards/val-000000.tar'"
            )
        if batch_size <= 0:
            raise ConfigError(f"data.batch_size must be a positive integer, got {batch_size}")
        self.patterns = {"train": urls, "val": val_urls, "test": test_urls}
        self.resolution, self.channels, self.batch_size = resolution, channels, batch_size
        self.shuffle_buffer, self.num_workers, self.labels, self.seed = (
            shuffle_buffer,
            num_workers,
            labels,
            seed,
        )
        self.background = background_colour(background)
        self._splits: dict[str, tuple[list[str], list[int]]] = {}
        self.class_names: list[str] | None = None
        self._train_loader: StreamLoader | None = None
        self._resume: dict[str, int] | None = None  # a restored position, for the next training loader

    @property
    def has_test_split(self) -> bool:
        return self.patterns["test"] is not None

    def _split(self, split: str) -> tuple[list[str], list[int]]:
        if split not in self._splits:
            if self.patterns[split] is None:
                raise ConfigError(
                    f"data=webdataset has no {split} split: set data.{split}_urls, or evaluate split=val"
                )
            urls = expand_urls(self.patterns[split])
            counts, names = read_index(urls)
            if self.labels and names is None:
                raise ConfigError(
                    "data.labels=true but the shards' index.json names no classes: write them from labelled data."
                )
            self.class_names = names if self.labels else None
            self._splits[split] = (urls, counts)
        return self._splits[split]

    def setup(self, stage: str | None = None) -> None:
        self._split("train")

    def model_inputs(self) -> dict:
        if not self.labels:
            return {}
        self.setup()
        return {"num_classes": len(self.class_names)}

    def split_id(self, split: str) -> str:
        urls, counts = self._split(split)
        names = [Path(u).name if not _is_url(u) else u for u in urls]
        digest = hashlib.sha256(repr([*names, "background", self.background]).encode()).hexdigest()
        return f"{self.name}-{split}{sum(counts)}-{self.channels}x{self.resolution}px-{digest[:8]}"

    def dataset(self, split: str, shuffle: bool | None = None) -> ShardStream:
        """``split``'s stream of batches (shuffled for train unless ``shuffle=False``), as one process reads
        it in epoch 0."""
        urls, counts = self._split(split)
        return ShardStream(
            urls, counts, self.batch_size, self.channels, self.resolution, self.labels,
            shuffle=split == "train" if shuffle is None else shuffle, shuffle_buffer=self.shuffle_buffer,
            seed=self.seed, background=self.background,
        )  # fmt: skip

    def eval_dataloader(self, split: str) -> StreamLoader:
        return StreamLoader(self.dataset(split, shuffle=False), num_workers=0)

    def train_dataloader(self) -> StreamLoader:
        self._train_loader = StreamLoader(self.dataset("train"), num_workers=self.num_workers)
        if self._resume is not None:
            self._train_loader.resume_at(self._resume)
            self._resume = None
        return self._train_loader

    def state_dict(self) -> dict:
        """The training stream's position, for exact resume, and the class names of labelled shards
        (``sample.py labels=[<name>]``)."""
        position = self._train_loader.position() if self._train_loader is not None else {}
        names = {"class_names": list(self.class_names)} if self.labels and self.class_names else {}
        return {**position, **names}

    def load_state_dict(self, state: dict) -> None:
        self._resume = state if "epoch" in state else None

    def val_dataloader(self) -> StreamLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> StreamLoader:
        return self.eval_dataloader("test")
