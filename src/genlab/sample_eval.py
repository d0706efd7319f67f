"""Image metrics of samples from anywhere (a folder of images, an ``.npz`` or ``.npy``), against a datamodule's split
or a reference statistics file; and the export of a split's real statistics to such a file.

    python src/eval.py samples=<folder | .npz | .npy> data=mnist data.root=<folder>   # against MNIST's val split
    python src/eval.py samples=<folder | .npz | .npy> reference=<stats.npz>
    python src/eval.py export_reference=<stats.npz> data=mnist data.root=<folder> split=test

``split=train`` scores samples against the training images, the protocol of most CIFAR-10 tables (50k samples
against the 50k training images: ``metrics.max_real=50000``).
"""

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image

from genlab.callbacks.image_metrics import ImageMetrics
from genlab.data.pixels import convert
from genlab.errors import ConfigError
from genlab.metrics.inception import to_uint8
from genlab.metrics.suite import ImageMetricSuite
from genlab.models import GenerativeModel
from genlab.utils.files import NUMPY_MAGIC, load_numpy

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
NPZ_KEYS = ("arr_0", "images", "samples")  # openai/guided-diffusion's and genlab's sample.py layouts


def samples_source(path: str | Path) -> Path:
    """``path``; for the output folder of ``sample.py`` (its grid.png beside them), the samples it wrote."""
    path = Path(path)
    if (path / "grid.png").is_file():
        for written in (path / "samples", path / "samples.npz"):
            if written.exists():
                return written
    return path


def nested(path: Path) -> str:
    """What to say of a folder whose images all sit in subfolders, which are not searched (as torch-fidelity's
    default): which subfolders, and the fix."""
    holders = [
        d.name
        for d in sorted(path.iterdir())
        if d.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in d.iterdir())
    ]
    if not holders:
        return ""
    return f"; its subfolders {', '.join(holders[:3])}{', ...' if len(holders) > 3 else ''} do, which are not searched: give one, or move all the samples into one folder"


def sample_batches(path: str | Path, batch_size: int) -> Iterator[torch.Tensor]:
    """uint8 (B, 3, H, W) batches of the images in a folder (sorted by name) or an array file (:func:`read_array`);
    given a ``sample.py`` output folder, the samples in it (not its grid)."""
    path = samples_source(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ConfigError(
                f"samples={path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}){nested(path)}."
            )
        size = None
        for start in range(0, len(files), batch_size):
            images = [_read_image(f) for f in files[start : start + batch_size]]
            for file, image in zip(files[start:], images, strict=False):
                size = size or (files[0], image.shape[1:])
                if image.shape[1:] != size[1]:
                    raise ConfigError(
                        f"samples must share one size: {size[0].name} is {tuple(size[1])}, {file.name} is "
                        f"{tuple(image.shape[1:])} (H, W); resize them first."
                    )
            yield torch.stack(images)
    elif path.suffix.lower() in NUMPY_MAGIC and path.is_file():
        for batch in read_array(path).split(batch_size):
            yield batch.expand(-1, 3, -1, -1).contiguous()
    elif not path.exists():
        raise ConfigError(f"samples={path} does not exist: give a folder of images, an .npz or an .npy file.")
    else:
        raise ConfigError(f"samples={path} is neither a folder of images nor an .npz or .npy file.")


def read_array(path: Path) -> torch.Tensor:
    """uint8 (N, C, H, W) images (C 1 or 3) of an ``.npz`` (under one of :data:`NPZ_KEYS`, or its only array)
    or ``.npy``, stored (N, H, W), (N, H, W, C) or (N, C, H, W). Any other array is refused naming the fix:
    floats are not rescaled here, since whether they span [0, 1] or [-1, 1] changes every metric."""
    array, where = load_array(path)
    what = f"{where} is {array.dtype} {tuple(array.shape)}"
    if array.dtype != np.uint8:
        span = (
            f" with values in [{array.min():.3g}, {array.max():.3g}]"
            if array.size and array.dtype.kind in "fiu"
            else ""
        )
        raise ConfigError(
            f"{what}{span}: expected uint8 pixels 0-255; convert it first, e.g. "
            "(x * 255).round().clip(0, 255).astype(np.uint8) for images in [0, 1]."
        )
    images = torch.from_numpy(array)
    if images.dim() == 3:
        return images.unsqueeze(1)
    if images.dim() == 4 and images.shape[-1] in (1, 3):
        return images.permute(0, 3, 1, 2)
    if images.dim() == 4 and images.shape[1] in (1, 3):
        return images
    raise ConfigError(f"{what}: expected (N, H, W), (N, H, W, C) or (N, C, H, W) with C 1 (grey) or 3 (RGB).")


def load_array(path: Path) -> tuple[np.ndarray, str]:
    """The images' array of an ``.npy``, or of an ``.npz`` under one of :data:`NPZ_KEYS` (or its only array),
    and where it was found."""
    loaded = load_numpy(path, "images")
    if path.suffix.lower() == ".npy":
        return loaded, str(path)
    with loaded as data:
        key = next((k for k in NPZ_KEYS if k in data.files), data.files[0] if len(data.files) == 1 else None)
        if key is None:
            raise ConfigError(f"{path} holds {data.files}: put the images under one of {NPZ_KEYS}.")
        return data[key], f"{path}[{key}]"


def _read_image(file: Path) -> torch.Tensor:
    with Image.open(file) as image:
        array = np.asarray(convert(image, "RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def build_suite(cfg: DictConfig) -> tuple[ImageMetricSuite, ImageMetrics]:
    """The metric suite of ``cfg.metrics`` (the callback's settings: weights, options, cache, counts)."""
    settings: ImageMetrics = instantiate(cfg.metrics, _convert_="all")
    if not settings.available:
        raise ConfigError(
            "No FID Inception weights found: give them with metrics.fid.weights_path=<file> or GENLAB_FID_WEIGHTS."
        )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return ImageMetricSuite(settings.weights_path, settings.options).to(device), settings


def real_statistics(cfg: DictConfig, suite: ImageMetricSuite, settings: ImageMetrics) -> str:
    """Fills the suite's real statistics from ``reference`` or the split of ``data`` (cached on disk);
    returns where they came from."""
    if cfg.get("reference"):
        suite.load_reference(cfg.reference)
        return f"reference:{cfg.reference}"
    datamodule = instantiate(cfg.data, _convert_="all")
    if datamodule.modality != "image":
        raise ConfigError(f"data={datamodule.name} is not an image dataset.")
    split = cfg.split
    key = datamodule.split_id(split)
    cached = settings.cache.load(key, suite.real_keys) if settings.cache else None
    if cached is not None:
        suite.load_real_statistics(cached)
        return key
    seen = 0
    for batch in datamodule.eval_dataloader(split):
        real = GenerativeModel.inputs(batch)[: settings.max_real - seen]
        suite.update(to_uint8(real).to(suite.fid.device), real=True)
        seen += len(real)
        if seen >= settings.max_real:
            break
    if settings.cache:
        settings.cache.save(key, suite.real_statistics())
    return key


def evaluate_samples(cfg: DictConfig) -> dict:
    """Every enabled image metric of ``cfg.samples`` against the real statistics; returns metrics and protocol."""
    if not cfg.get("reference") and cfg.get("data") is None:
        raise ConfigError(
            "Real statistics needed: give data=<dataset> (and data.root=...) or reference=<stats.npz>."
        )
    next(sample_batches(cfg.samples, 1))  # a bad samples path fails before the Inception network loads
    torch.manual_seed(cfg.seed)  # KID's subsets
    suite, settings = build_suite(cfg)
    source = real_statistics(cfg, suite, settings)
    for batch in sample_batches(cfg.samples, settings.batch_size):
        suite.update(batch.to(suite.fid.device), real=False)
    values = {f"{cfg.split}/{name}": float(value) for name, value in suite.compute().items()}
    protocol = suite.protocol()
    for entry in protocol.values():
        entry.update(split=cfg.split, real_statistics=source)
    return {"samples": str(samples_source(cfg.samples)), **values, "protocol": protocol}


def export_reference(cfg: DictConfig) -> dict:
    """Writes the real statistics of ``data``'s split to ``cfg.export_reference`` (.npz)."""
    if cfg.get("data") is None:
        raise ConfigError(
            "export_reference needs data=<dataset> (and data.root=...): whose statistics to write."
        )
    suite, settings = build_suite(cfg)
    source = real_statistics(cfg, suite, settings)
    suite.save_reference(cfg.export_reference, source)
    count = suite.fid.real_moments()[2]
    log.info("Wrote the real statistics of %s (%d images) to %s", source, count, cfg.export_reference)
    return {"reference": str(cfg.export_reference), "source": source, "num_images": count}
