"""Writes WebDataset tar shards of an image datamodule's splits, read back by ``data=webdataset``.

Each sample is ``<index>.png`` (the image as the datamodule yields it, at its resolution and channels, as
8-bit PNG) and, with labels, ``<index>.cls`` (the class index as text). ``index.json`` beside the shards holds
each shard's sample count, the class names, the source data and its shape.
"""

import io
import json
import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from PIL import Image
from torch.utils.data import DataLoader, Subset

from genlab.data.images import ImageDataModule
from genlab.data.stream import INDEX
from genlab.errors import ConfigError
from genlab.utils.files import atomic_write

log = logging.getLogger(__name__)


def _datamodule(cfg: DictConfig) -> ImageDataModule:
    """The configured image datamodule, with labels where ``cfg.labels`` asks and the data has them."""
    if cfg.labels and "labels" in cfg.data:
        with open_dict(cfg):
            cfg.data.labels = True
        try:
            dm = instantiate(cfg.data, _convert_="all")
            dm.setup()
            return dm
        except ConfigError:  # unlabelled data: shards without .cls
            cfg.data.labels = False
    dm = instantiate(cfg.data, _convert_="all")
    if not isinstance(dm, ImageDataModule):
        raise ConfigError(f"src/shard.py writes image datamodules; data={dm.name} is not one.")
    dm.setup()
    return dm


def _png(image) -> bytes:
    pixels = ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buf, "PNG")
    return buf.getvalue()


def write_shards(cfg: DictConfig) -> Path:
    """Writes ``<out>/<split>-%06d.tar`` for each of ``cfg.splits`` and ``<out>/index.json``."""
    from webdataset import TarWriter

    if cfg.shard_size <= 0:
        raise ConfigError(f"shard_size must be a positive number of samples, got {cfg.shard_size}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    dm = _datamodule(cfg)
    index = json.loads((out / INDEX).read_text()) if (out / INDEX).is_file() else {"shards": {}}
    for split in cfg.splits:
        if split == "test" and not dm.has_test_split:
            log.info("data=%s has no test split: no test shards", dm.name)
            continue
        dataset = dm.dataset(split)
        if cfg.max_samples is not None:
            dataset = Subset(dataset, range(min(cfg.max_samples, len(dataset))))
        loader = DataLoader(dataset, batch_size=256, num_workers=dm.num_workers)
        written, writer, name = 0, None, None
        for batch in loader:
            images, labels = batch if isinstance(batch, (list, tuple)) else (batch, None)
            for i, image in enumerate(images):
                if written % cfg.shard_size == 0:
                    if writer is not None:
                        writer.close()
                    name = f"{split}-{written // cfg.shard_size:06d}.tar"
                    writer = TarWriter(str(out / name))
                    index["shards"][name] = 0
                sample = {"__key__": f"{written:08d}", "png": _png(image)}
                if labels is not None:
                    sample["cls"] = str(int(labels[i]))
                writer.write(sample)
                index["shards"][name] += 1
                written += 1
        if writer is not None:
            writer.close()
        shards = written // cfg.shard_size + bool(written % cfg.shard_size)
        log.info(
            "%s: %d samples in %d shards %s-{000000..%06d}.tar", split, written, shards, split, shards - 1
        )
    index.update(
        source=dm.name,
        channels=dm.channels,
        resolution=dm.resolution,
        class_names=dm.class_names if cfg.data.get("labels") else None,
    )
    atomic_write(out / INDEX, lambda f: f.write(json.dumps(index, indent=1, sort_keys=True).encode()))
    return out
