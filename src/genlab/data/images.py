"""Image LightningDataModules. Every one yields float images in [-1, 1] of shape (C, R, R).

In-memory datasets (digits, MNIST, Fashion-MNIST, CIFAR-10) are decoded and resized once at
``setup`` and kept as uint8 tensors; folder datasets (CelebA, any image folder) decode lazily.
Splits: the official test set where the dataset has one (MNIST, Fashion-MNIST, CIFAR-10, CelebA's
partition file), validation carved from the training images; see :class:`ImageDataModule`.
"""

import gzip
import hashlib
import importlib.util
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms

from genlab.data.base import GenlabDataModule
from genlab.data.file_index import IMAGE_EXTENSIONS, index_images
from genlab.data.pixels import RGB, WHITE, background_colour, convert
from genlab.data.sampling import carve, eval_sampler, train_loader
from genlab.errors import ConfigError, DataError, DatasetNotFoundError

log = logging.getLogger(__name__)
BAD_FILE_POLICIES = ("skip", "error")


class UInt8Images(Dataset):
    """uint8 (N, C, R, R) tensor -> float images in [-1, 1]; with ``labels`` (N,), (image, label) pairs."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        image = self.images[i].float().div_(127.5).sub_(1.0)
        return image if self.labels is None else (image, self.labels[i])

    def __getitems__(self, indices: list[int]) -> list:
        """A batch's items in one indexing op (the DataLoader's batched fetch), equal to ``__getitem__``'s."""
        index = torch.as_tensor(indices)
        images = self.images[index].float().div_(127.5).sub_(1.0).unbind(0)
        return list(images) if self.labels is None else list(zip(images, self.labels[index].unbind(0)))


class Binarized(Dataset):
    """Images in [-1, 1] as Bernoulli samples of their intensity, in {-1, 1} (dynamic binarisation):
    drawn anew at every access, or, with ``seed``, one fixed sample per image (a binarised eval split)."""

    def __init__(self, dataset: Dataset, seed: int | None = None):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        item = self.dataset[i]
        image, label = item if isinstance(item, tuple) else (item, None)
        generator = None if self.seed is None else torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        binary = torch.bernoulli(image.add(1).div_(2).clamp_(0, 1), generator=generator).mul_(2).sub_(1)
        return binary if label is None else (binary, label)

    def __getitems__(self, indices: list[int]) -> list:
        """A batch at once: its images fetched and binarised in one op each (dynamic binarisation); a fixed
        sample per image (``seed``) keeps its own generator, as ``__getitem__``."""
        if self.seed is not None:
            return [self[i] for i in indices]
        items = getitems(self.dataset, indices)
        labelled = isinstance(items[0], tuple)
        images = torch.stack([item[0] for item in items] if labelled else items)
        binary = torch.bernoulli(images.add_(1).div_(2).clamp_(0, 1)).mul_(2).sub_(1).unbind(0)
        return list(zip(binary, (item[1] for item in items))) if labelled else list(binary)


def getitems(dataset: Dataset, indices: list[int]) -> list:
    """``dataset``'s items at ``indices``, in one batched fetch where the dataset has one."""
    if callable(getattr(dataset, "__getitems__", None)):
        return dataset.__getitems__(indices)
    return [dataset[i] for i in indices]


class ImageFiles(Dataset):
    """Image files decoded on access, converted to ``channels`` (transparency flattened onto ``background``),
    center-cropped and resized; with ``labels`` (one per file), (image, label) pairs. Without a pixel
    ``crop``, large JPEGs are decoded at the smallest of 1/2, 1/4, 1/8 scale that still covers
    ``resolution`` (PIL's ``draft``: a 4000x3000 photo for 64 px decodes about 3x faster)."""

    def __init__(
        self,
        files: list[str] | list[Path],
        channels: int,
        resolution: int,
        crop: int | None = None,
        labels: list[int] | None = None,
        background: RGB = WHITE,
    ):
        self.paths = [str(f) for f in files]
        self.labels = torch.tensor(labels) if labels is not None else None
        self.mode, self.background = ("L" if channels == 1 else "RGB"), background
        self.resolution, self.crop = resolution, crop
        self.transform = transforms.Compose(
            [
                transforms.CenterCrop(crop) if crop else transforms.Lambda(_center_square),
                transforms.Resize(resolution, antialias=True),
                transforms.ToTensor(),
                transforms.Normalize([0.5] * channels, [0.5] * channels),
            ]
        )

    @property
    def files(self) -> list[Path]:
        return [Path(p) for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        with Image.open(self.paths[i]) as img:
            if self.crop is None:  # a JPEG decodes at 1/2, 1/4 or 1/8 scale, still covering the resolution
                img.draft(self.mode, (self.resolution, self.resolution))
            image = self.transform(convert(img, self.mode, self.background))
        return image if self.labels is None else (image, self.labels[i])


def _center_square(img: Image.Image) -> Image.Image:
    return transforms.functional.center_crop(img, min(img.size))


def resize_uint8(images: torch.Tensor, channels: int, resolution: int) -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N, channels, resolution, resolution) uint8, resized once (bilinear)."""
    if images.shape[1] != channels:
        if images.shape[1] == 1:
            images = images.expand(-1, channels, -1, -1)
        else:  # RGB -> grey with ITU-R 601 luma weights
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * weights).sum(1, keepdim=True).round().to(torch.uint8)
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images.contiguous()
    out = []
    for chunk in images.split(4096):
        x = F.interpolate(chunk.float(), size=(resolution, resolution), mode="bilinear", antialias=True)
        out.append(x.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


class ImageDataModule(GenlabDataModule):
    """Shared loader logic; subclasses implement :meth:`load_splits`.

    Without an official test set, ``val_fraction`` (and ``test_fraction`` when > 0) of the images are
    carved, disjoint, from one permutation seeded by ``seed``: val first, then test, the rest trains.

    ``labels=true`` yields (image, class index) pairs from datasets that have labels; their
    :attr:`class_names` and ``num_classes`` (:meth:`model_inputs`) reach the model through the pipeline.

    ``binarize=dynamic``: pixels are Bernoulli samples of their intensity, drawn anew each time a training
    image is read; val and test images are binarised once (seeded by ``seed``), the usual protocol of
    likelihoods on binarised MNIST.
    """

    name = "images"
    modality = "image"
    state_kind = "class names"  # of labelled data: the model's labels
    default_workers = 0  # in-memory tensors: worker processes only add overhead
    official_test = False  # a test set ships with the dataset (test_fraction does not apply)

    def __init__(
        self,
        root: str | None = None,
        resolution: int = 32,
        channels: int = 3,
        batch_size: int = 64,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        download: bool = False,
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        seed: int = 0,
        labels: bool = False,
        binarize: str | None = None,
    ):
        super().__init__()
        if binarize not in (None, "dynamic"):
            raise ConfigError(f"data.binarize={binarize!r} is unknown: use dynamic, or null for grey levels")
        if batch_size <= 0:
            raise ConfigError(f"data.batch_size must be a positive integer, got {batch_size}")
        if channels not in (1, 3):
            raise ConfigError(f"data.channels must be 1 (grey) or 3 (RGB), got {channels}")
        if not (val_fraction > 0 and test_fraction >= 0 and val_fraction + test_fraction < 1):
            raise ConfigError(
                f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must satisfy "
                "0 < val_fraction, 0 <= test_fraction and val_fraction + test_fraction < 1"
            )
        if test_fraction and self.official_test:
            raise ConfigError(
                f"data={self.name} has an official test set: data.test_fraction does not apply; remove it"
            )
        self.root = Path(root).expanduser() if root else None
        self.resolution, self.channels = resolution, channels
        self.batch_size, self.download = batch_size, download
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        self.labels, self.binarize = labels, binarize
        self.class_names: list[str] | None = None  # set by load_splits when labels are read
        self.run_class_names: list[str] | None = None  # a resumed labelled run's (load_state_dict)
        self.num_workers = self.default_workers if num_workers is None else num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @property
    def has_test_split(self) -> bool:
        """Whether :meth:`test_dataloader` has images to serve (decided without loading any)."""
        return self.official_test or self.test_fraction > 0

    def split_id(self, split: str) -> str:
        """Identifies exactly one split's images, e.g. ``mnist-test10000-1x32px-3f2a9c1e``, for caching
        their Inception statistics: name, split, size, shape, and a hash of what selects them."""
        self.setup()
        dataset = {"train": self.train_set, "val": self.val_set, "test": self.test_set}[split]
        if dataset is None:
            raise ConfigError(self._no_test_message())
        selection = [str(self.root and self.root.resolve()), *self.decoding]
        if not self._is_official(split):
            selection += [self.seed, self.val_fraction, self.test_fraction]
        if self.binarize:
            selection += [self.binarize, self.seed]
        digest = hashlib.sha256(repr(selection).encode()).hexdigest()[:8]
        return f"{self.name}-{split}{len(dataset)}-{self.channels}x{self.resolution}px-{digest}"

    @property
    def decoding(self) -> list:
        """What decides a split's pixels besides its files and shape (part of :meth:`split_id`)."""
        return [None]  # arrays decoded one way (the None keeps the cache keys of earlier releases)

    def model_inputs(self) -> dict:
        """``{"num_classes": n}`` when the data yields labels (a conditional model's class count)."""
        if not self.labels:
            return {}
        self.setup()
        return {"num_classes": len(self.class_names)}

    def state_dict(self) -> dict:
        """The class names of labelled data, kept in checkpoints: ``sample.py labels=[<name>]`` reads them."""
        return {"class_names": list(self.class_names)} if self.labels and self.class_names else {}

    def load_state_dict(self, state: dict) -> None:
        """Takes a labelled run's class names before any image is read (Lightning restores them on resuming,
        the pipeline first): a run resumed on other files labels them as the model learned, by name."""
        if self.labels and state.get("class_names"):
            self.run_class_names = list(state["class_names"])

    def _unlabelled(self, why: str) -> ConfigError:
        return ConfigError(
            f"data={self.name} has no labels ({why}): set data.labels=false, or use labelled data."
        )

    def _is_official(self, split: str) -> bool:
        """Whether ``split`` is read as shipped (not carved by seed and fractions)."""
        return self.official_test and split == "test"

    def load_splits(self) -> tuple[Dataset, Dataset, Dataset | None]:
        """(train, val, test) datasets; test is None when there is none."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            train, val, test = self.load_splits()
            if self.run_class_names and self.class_names != self.run_class_names:
                raise DataError(
                    f"data={self.name} has the classes {self.class_names}, but the checkpoint's model was trained "
                    f"on {self.run_class_names}: resume on data of those classes, or start a new run without "
                    "ckpt_path."
                )
            if self.binarize:
                train, val = Binarized(train), Binarized(val, self.seed)
                test = test and Binarized(test, self.seed)
            self.train_set, self.val_set, self.test_set = train, val, test

    def dataset(self, split: str) -> Dataset:
        """``split``'s images (train, val or test)."""
        if split == "test" and not self.has_test_split:
            raise ConfigError(self._no_test_message())
        self.setup()
        return {"train": self.train_set, "val": self.val_set, "test": self.test_set}[split]

    def _require_root(self, layout: str) -> Path:
        if self.root is None:
            raise DatasetNotFoundError(
                f"data.root is not set for data={self.name}. Expected layout: {layout}. "
                f"Point data.root at the folder holding it (e.g. data.root=/path/to/data)."
            )
        return self.root

    def _carve(self, dataset: Dataset) -> tuple[Subset, Subset, Subset | None]:
        """(train, val, test) index subsets of ``dataset`` from one seeded permutation (test: None at
        ``test_fraction`` 0)."""
        n = len(dataset)
        held = f"data={self.name} has {n} image{'s' if n != 1 else ''}"
        train, val, test = carve(n, self.val_fraction, self.test_fraction, self.seed, held, "images")
        return Subset(dataset, train), Subset(dataset, val), Subset(dataset, test) if test else None

    def _no_test_message(self) -> str:
        return (
            f"data={self.name} has no test split: set data.test_fraction=0.1 to hold one out of the "
            "training data, or evaluate split=val"
        )

    def _workers(self) -> dict:
        return dict(
            num_workers=self.num_workers, pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0
        )

    def eval_dataloader(self, split: str) -> DataLoader:
        dataset = self.dataset(split)
        return DataLoader(dataset, self.batch_size, sampler=eval_sampler(dataset), **self._workers())

    def train_dataloader(self) -> DataLoader:
        return train_loader(self.train_set, self.batch_size, self.seed, **self._workers())

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")


class DigitsDataModule(ImageDataModule):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download), upsampled."""

    name = "digits"

    def load_splits(self):
        pixels, targets = bundled_digits()
        images = torch.from_numpy(pixels).float().mul(255 / 16).round().to(torch.uint8)
        images = resize_uint8(images[:, None], self.channels, self.resolution)
        self.class_names = [str(c) for c in range(10)]
        labels = torch.from_numpy(targets).long() if self.labels else None
        return self._carve(UInt8Images(images, labels))


def bundled_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``load_digits`` gives them ((N, 8, 8) levels 0..16, (N,) labels), read from the
    CSV it bundles: importing ``sklearn.datasets`` pulls in pandas and pyarrow, half a second of start-up."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is None or not path.is_file():  # another layout of scikit-learn: its loader
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images, digits.target
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


class MNISTDataModule(ImageDataModule):
    """MNIST from torchvision's layout ``<root>/MNIST/raw/*-ubyte[.gz]`` (or wherever :meth:`raw_folder` finds it).

    val: ``val_fraction`` of the 60k training images (seeded); test: the official 10k (t10k) images.
    """

    name = "mnist"
    folder = "MNIST"
    official_test = True
    classes = [str(digit) for digit in range(10)]

    def raw_folder(self) -> Path:
        """The folder of the idx files: torchvision's ``<root>/<folder>/raw/``, or ``data.root`` naming
        ``<folder>/``, its ``raw/``, or any folder holding the four files (never another dataset's folder)."""
        root = self._require_root(f"<root>/{self.folder}/raw/train-images-idx3-ubyte[.gz]")
        others = {cls.folder for cls in (MNISTDataModule, *MNISTDataModule.__subclasses__())} - {self.folder}
        candidates = [root / self.folder / "raw", root / "raw", root]
        found = (
            c
            for c in candidates
            if _idx_file(c, "train-images-idx3-ubyte") and not others & set(c.resolve().parts)
        )
        return next(found, candidates[0])

    def load_splits(self):
        raw = self.raw_folder()
        if not _idx_file(raw, "train-images-idx3-ubyte") and self.download:
            import torchvision

            getattr(torchvision.datasets, self.folder)(str(self.root), download=True)
        splits = []
        for prefix in ("train", "t10k"):
            path = _idx_file(raw, f"{prefix}-images-idx3-ubyte")
            if path is None:
                raise DatasetNotFoundError(
                    f"{self.folder} not found: looked for {raw}/{prefix}-images-idx3-ubyte[.gz]. Expected "
                    f"torchvision's layout <data.root>/{self.folder}/raw/ with the four idx files; set "
                    f"data.root to the folder containing {self.folder}/, or data.download=true when online."
                )
            images = torch.from_numpy(_read_idx_images(path))[:, None]
            labels = self._read_labels(raw, prefix, len(images)) if self.labels else None
            splits.append(UInt8Images(resize_uint8(images, self.channels, self.resolution), labels))
        self.class_names = list(self.classes)
        train, val, _ = self._carve(splits[0])
        return train, val, splits[1]

    def _read_labels(self, raw: Path, prefix: str, count: int) -> torch.Tensor:
        path = _idx_file(raw, f"{prefix}-labels-idx1-ubyte")
        if path is None:
            raise self._unlabelled(f"no {raw}/{prefix}-labels-idx1-ubyte[.gz]")
        labels = torch.from_numpy(_read_idx(path, magic=2049)).long()
        if len(labels) != count:
            raise DatasetNotFoundError(f"{path} holds {len(labels)} labels for {count} images.")
        return labels


class FashionMNISTDataModule(MNISTDataModule):
    name = "fashion_mnist"
    folder = "FashionMNIST"
    classes = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ]


def _idx_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem``, gzipped or not, or as Kaggle's copies name it (``train-images.idx3-ubyte``)."""
    for name in (stem, stem.replace("-idx", ".idx")):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _read_idx_images(path: Path) -> np.ndarray:
    return _read_idx(path, magic=2051)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array of an idx file: images (magic 2051, N x rows x cols) or labels (2049, N)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = magic - 2048  # the idx magic's low byte is the number of dimensions
    header = np.frombuffer(data[: 4 * (1 + dims)], dtype=">i4")
    shape = tuple(int(d) for d in header[1:])
    if header[0] != magic or len(data) != 4 * (1 + dims) + int(np.prod(shape)):
        kind = "image" if dims == 3 else "label"
        raise DatasetNotFoundError(
            f"{path} is not a valid idx {kind} file (magic {header[0]}, {len(data)} bytes)."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=4 * (1 + dims)).reshape(shape).copy()


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10 from torchvision's layout ``<root>/cifar-10-batches-py/`` (``data.root`` may name that folder).

    val: ``val_fraction`` of data_batch_1..5 (seeded); test: the official test_batch.
    """

    name = "cifar10"
    official_test = True

    def load_splits(self):
        root = self._require_root("<root>/cifar-10-batches-py/data_batch_1..5, test_batch")
        # data.root names cifar-10-batches-py itself, or the folder above it
        folder = root if (root / "test_batch").is_file() else root / "cifar-10-batches-py"
        if not folder.is_dir() and self.download:
            import torchvision

            torchvision.datasets.CIFAR10(str(self.root), download=True)
        names = ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"])
        splits = []
        for files in names:
            missing = [f for f in files if not (folder / f).is_file()]
            archive = root / "cifar-10-python.tar.gz"
            if missing and archive.is_file():
                raise DatasetNotFoundError(
                    f"CIFAR-10 not found: {folder} lacks {missing}, but {archive.name} is there: extract it "
                    f"first: `tar xzf {archive} -C {root}`."
                )
            if missing:
                raise DatasetNotFoundError(
                    f"CIFAR-10 not found: {folder} lacks {missing}. Expected torchvision's layout "
                    "<data.root>/cifar-10-batches-py/ (python pickles); set data.root, or data.download=true."
                )
            batches = [_read_cifar_batch(folder / f) for f in files]
            images = torch.from_numpy(np.concatenate([b["data"] for b in batches])).view(-1, 3, 32, 32)
            labels = torch.tensor([y for b in batches for y in b["labels"]]) if self.labels else None
            splits.append(UInt8Images(resize_uint8(images, self.channels, self.resolution), labels))
        self.class_names = _cifar_classes(folder)
        train, val, _ = self._carve(splits[0])
        return train, val, splits[1]


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _cifar_classes(folder: Path) -> list[str]:
    """The class names of ``batches.meta`` (the official order), else CIFAR-10's."""
    meta = folder / "batches.meta"
    if not meta.is_file():
        return list(CIFAR10_CLASSES)
    names = _read_cifar_pickle(meta, "label_names")["label_names"]
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _read_cifar_pickle(path: Path, *keys: str) -> dict:
    """A CIFAR-10 python pickle as a dict with str keys: the official files (pickled by Python 2) and copies
    re-pickled by Python 3, whose keys are bytes, alike."""
    try:
        with open(path, "rb") as f:
            found = pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise DatasetNotFoundError(f"{path} is not a CIFAR-10 python pickle ({e}).") from None
    found = {k.decode() if isinstance(k, bytes) else k: v for k, v in dict(found).items()}
    missing = [k for k in keys if k not in found]
    if missing:
        raise DatasetNotFoundError(
            f"{path} is not a CIFAR-10 python batch: it lacks {missing} (it has {sorted(map(str, found))})."
        )
    return found


def _read_cifar_batch(path: Path) -> dict:
    """``data`` (N, 3072) uint8 and ``labels`` of one batch file (the official CIFAR-10 python format)."""
    batch = _read_cifar_pickle(path, "data", "labels")
    data = np.asarray(batch["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072 or len(batch["labels"]) != len(data):
        raise DatasetNotFoundError(
            f"{path} is not a CIFAR-10 python batch: data {data.shape} with {len(batch['labels'])} labels, "
            "expected (N, 3072) and N labels."
        )
    return {"data": data, "labels": [int(y) for y in batch["labels"]]}


class ImageFolderDataModule(ImageDataModule):
    """Any folder of images (searched recursively), carved by ``val_fraction`` and ``test_fraction``.

    With ``labels=true`` the folder has torchvision's ImageFolder layout: one subfolder per class
    (``<root>/<class>/**/*.png``), classes in sorted order. Transparent pixels are painted over
    ``background`` (a colour name or ``#rrggbb``; :mod:`genlab.data.pixels`).
    """

    name = "image_folder"
    default_workers = min(4, os.cpu_count() or 1)

    def __init__(
        self,
        *args,
        crop: int | None = None,
        background: str = "white",
        on_bad_file: str = "skip",
        index_cache: str | None = None,
        save_dir: str | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if on_bad_file not in BAD_FILE_POLICIES:
            raise ConfigError(f"data.on_bad_file={on_bad_file!r} is unknown: use one of {BAD_FILE_POLICIES}")
        self.crop, self.on_bad_file = crop, on_bad_file
        self.background = background_colour(background)
        self.index_cache, self.save_dir = index_cache, Path(save_dir) if save_dir else None

    def list_images(self, folder: Path, expectation: str) -> list[str]:
        """The readable images under ``folder`` (from the cached :func:`index_images`); unreadable ones are
        skipped (named once in the log and in ``<run>/bad_files.txt``) or, with ``on_bad_file=error``, refused
        here, before training."""
        if folder.is_file():
            raise DatasetNotFoundError(
                f"{folder} is a file, not a folder: {expectation}; give the folder that holds the images."
            )
        if not folder.is_dir():
            raise DatasetNotFoundError(f"Dataset folder {folder} does not exist: {expectation}.")
        index = index_images(folder, self.index_cache)
        if index.bad and self.on_bad_file == "error":
            path, why = next(iter(index.bad.items()))
            more = f" (and {len(index.bad) - 1} more)" if len(index.bad) > 1 else ""
            raise DataError(
                f"{path} is {why}{more}: remove it, or set data.on_bad_file=skip to train without such files."
            )
        if index.bad:
            report = self.save_dir / "bad_files.txt" if self.save_dir else None
            if report is not None:
                self.save_dir.mkdir(parents=True, exist_ok=True)
                report.write_text("".join(f"{path}\t{why}\n" for path, why in index.bad.items()))
            first = ", ".join(
                f"{p.relative_to(index.folder)} ({why})" for p, why in list(index.bad.items())[:3]
            )
            log.warning(
                "Skipping %d unreadable image file(s) of %s: %s%s%s",
                len(index.bad),
                folder,
                first,
                ", ..." if len(index.bad) > 3 else "",
                f"; all listed in {report}" if report else "",
            )
        if not index.files:
            raise DatasetNotFoundError(
                f"No images ({', '.join(IMAGE_EXTENSIONS)}){' that can be read' if index.bad else ''} found in "
                f"{folder}: {expectation}."
            )
        return index.files

    @property
    def decoding(self) -> list:
        return [self.crop, "background", self.background]

    def image_files(self, paths: list[str], labels: list[int] | None = None) -> ImageFiles:
        return ImageFiles(paths, self.channels, self.resolution, self.crop, labels, self.background)

    def load_splits(self):
        folder = self._require_root("<root>/**/*.{jpg,png,...}")
        files = self.list_images(folder, f"data={self.name} expects image files under {folder}")
        labels = None
        if self.labels:
            prefix = len(str(folder.resolve())) + 1
            tops = [f[prefix:].split(os.sep, 1) for f in files]  # (class folder, rest) or (file,)
            if outside := sum(len(top) == 1 for top in tops):
                raise self._unlabelled(
                    f"{outside} image{' lies' if outside == 1 else 's lie'} in {folder} itself, not in a class subfolder"
                )
            found = sorted({top[0] for top in tops})
            self.class_names = self.run_class_names or found  # a resumed run's labels, by name
            if unknown := [name for name in found if name not in self.class_names]:
                raise DataError(
                    f"{folder} has class folders that the checkpoint's model was not trained on: "
                    f"{', '.join(unknown)} (its classes: {', '.join(self.class_names)}); leave them out, or "
                    "start a new run without ckpt_path."
                )
            index = {name: i for i, name in enumerate(self.class_names)}
            labels = [index[top[0]] for top in tops]
        return self._carve(self.image_files(files, labels))


class CelebADataModule(ImageFolderDataModule):
    """CelebA aligned faces, center-cropped (178 px) and resized.

    Accepts torchvision's layout ``<root>/celeba/img_align_celeba/`` or a plain
    ``<root>/img_align_celeba/`` folder. With ``list_eval_partition.txt`` beside the folder its
    official splits are used (0/1/2 = train/val/test; the fractions do not apply); without it, the
    folder is carved.
    """

    name = "celeba"

    def __init__(self, *args, crop: int | None = 178, **kwargs):
        super().__init__(*args, crop=crop, **kwargs)

    def _candidates(self) -> list[Path]:
        root = self._require_root("<root>/celeba/img_align_celeba/*.jpg or <root>/img_align_celeba/*.jpg")
        return [root / "celeba" / "img_align_celeba", root / "img_align_celeba"]

    def _partition(self) -> Path | None:
        """The official split file beside the image folder, if any: ``list_eval_partition.txt`` (space
        separated, as the CelebA site and torchvision have it) or ``.csv`` (Kaggle's copy, with a header)."""
        folders = [c for c in self._candidates() if c.is_dir()] if self.root else []
        paths = (
            [folders[0].parent / f"list_eval_partition.{ext}" for ext in ("txt", "csv")] if folders else []
        )
        return next((path for path in paths if path.is_file()), None)

    @staticmethod
    def read_partition(path: Path) -> dict[str, str]:
        """Image name -> split code (0 train, 1 val, 2 test) of a partition file, .txt or .csv."""
        rows = (line.replace(",", " ").split() for line in path.read_text().splitlines())
        return {row[0]: row[1] for row in rows if len(row) == 2 and row[1] in ("0", "1", "2")}

    @property
    def has_test_split(self) -> bool:
        return self.test_fraction > 0 or self._partition() is not None

    def _is_official(self, split: str) -> bool:
        return self._partition() is not None

    def load_splits(self):
        if self.labels:
            raise self._unlabelled("identity and attribute files are not read")
        candidates = self._candidates()
        folder = next((c for c in candidates if c.is_dir()), None)
        if folder is None:
            archive = next(
                (c.with_suffix(".zip") for c in candidates if c.with_suffix(".zip").is_file()), None
            )
            fix = (
                f"unzip it first: `unzip {archive} -d {archive.parent}`"
                if archive
                else "set data.root to the folder that holds them"
            )
            raise DatasetNotFoundError(
                f"CelebA not found: looked for {candidates[0]} and {candidates[1]}"
                + (f", found only {archive.name}" if archive else "")
                + ". Expected the aligned JPEGs (000001.jpg, ...) in img_align_celeba/, optionally with "
                f"list_eval_partition.txt (or .csv) beside it; {fix}."
            )
        files = self.list_images(folder, "CelebA's img_align_celeba/ holds 000001.jpg, 000002.jpg, ...")
        partition = self._partition()
        if partition is None:
            return self._carve(self.image_files(files))
        split_of = self.read_partition(partition)
        splits = [[f for f in files if split_of.get(os.path.basename(f)) == code] for code in "012"]
        if not all(splits):
            raise DatasetNotFoundError(
                f"{partition} assigns no images of {folder} to the train (0), val (1) or test (2) split."
            )
        train, val, test = (self.image_files(fs) for fs in splits)
        return train, val, test
