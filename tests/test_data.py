"""Image datamodules on real data (../shared MNIST) and on small folders written in each layout;
train, val and test splits are disjoint, and test metrics come from the test split."""

import gzip
import hashlib
import math
import pickle
import re
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from genlab.data.images import (
    CelebADataModule,
    CIFAR10DataModule,
    DatasetNotFoundError,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageFiles,
    ImageFolderDataModule,
    MNISTDataModule,
    _read_idx_images,
    bundled_digits,
)
from genlab.data.sampling import EpochShuffle, LengthGroupedShuffle
from genlab.data.stream import decode_image
from genlab.errors import ConfigError
from genlab.pipeline import train
from tests.conftest import compose_train
from tests.datasets import write_celeba, write_cifar10, write_fashion_mnist, write_image_folder


def first_batch(dm, split="train"):
    dm.setup("fit")
    return next(iter(dm.train_dataloader() if split == "train" else dm.val_dataloader()))


def check_images(batch, channels, resolution):
    assert batch.dtype == torch.float32
    assert batch.shape[1:] == (channels, resolution, resolution)
    assert batch.min() >= -1.0 and batch.max() <= 1.0
    assert batch.min() < -0.9 and batch.max() > 0.9, "normalised to the full [-1, 1] range"


def test_digits_is_embedded_and_resized():
    dm = DigitsDataModule(resolution=32, channels=1, batch_size=16)
    check_images(first_batch(dm), 1, 32)
    assert len(dm.train_set) + len(dm.val_set) == 1797 and dm.test_set is None
    from sklearn.datasets import load_digits

    digits, (pixels, targets) = load_digits(), bundled_digits()  # read without importing sklearn.datasets
    assert np.array_equal(pixels, digits.images) and np.array_equal(targets, digits.target)


def test_mnist_from_shared_gz_files(mnist_root):
    dm = MNISTDataModule(root=str(mnist_root), resolution=32, channels=1, batch_size=8)
    check_images(first_batch(dm, "val"), 1, 32)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (54000, 6000, 10000)
    assert dm.has_test_split
    assert re.fullmatch(r"mnist-val6000-1x32px-[0-9a-f]{8}", dm.split_id("val"))
    assert re.fullmatch(r"mnist-test10000-1x32px-[0-9a-f]{8}", dm.split_id("test"))
    other_seed = MNISTDataModule(root=str(mnist_root), resolution=32, channels=1, seed=1)
    assert other_seed.split_id("val") != dm.split_id("val"), "another seed carves other val images"
    assert other_seed.split_id("test") == dm.split_id("test"), "the official test set whatever the seed"
    with pytest.raises(ConfigError, match="official test set"):
        MNISTDataModule(root=str(mnist_root), test_fraction=0.1)


def image_hashes(loader) -> list[bytes]:
    """A content hash of every image the loader yields."""
    return [hashlib.blake2b(x.numpy().tobytes(), digest_size=16).digest() for batch in loader for x in batch]


def test_mnist_splits_share_no_image(mnist_root):
    """No test image is trained or validated on, no validation image is trained on (by content).

    MNIST's raw files hold 60,000 distinct training and 10,000 distinct t10k images and share
    none (0 exact duplicates, counted below): no pair needs excluding.
    """
    raw = mnist_root / "MNIST" / "raw"
    files = [_read_idx_images(raw / f"{p}-images-idx3-ubyte.gz") for p in ("train", "t10k")]
    train_raw, test_raw = ({a.tobytes() for a in images} for images in files)
    raw_shared = train_raw & test_raw
    assert (len(train_raw), len(test_raw), len(raw_shared)) == (60000, 10000, 0)

    dm = MNISTDataModule(root=str(mnist_root), resolution=28, channels=1, batch_size=1000)  # raw pixels
    dm.setup("fit")
    train, val, test = (
        image_hashes(loader()) for loader in (dm.train_dataloader, dm.val_dataloader, dm.test_dataloader)
    )
    assert (len(train), len(val), len(test)) == (54000, 6000, 10000)
    assert len(set(train) | set(val) | set(test)) == 70000, "every image once, in one split"
    assert not set(test) & (set(train) | set(val)) and not set(val) & set(train)


class SeenImages(pl.Callback):
    """Content hashes of the images each evaluation stage reads."""

    def __init__(self):
        self.seen = {"val": [], "test": []}

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self.seen["val"] += image_hashes([batch.cpu()])

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.seen["test"] += image_hashes([batch.cpu()])


def test_test_metrics_come_from_the_mnist_test_set(mnist_root, tmp_path):
    overrides = ["model=vae", "data=mnist", f"data.root={mnist_root}", "trainer=cpu", "trainer.max_epochs=1"]
    overrides += ["model.encoder.width=8", "model.decoder.width=8", "model.latent_dim=8"]
    overrides += ["+trainer.limit_train_batches=4", "+trainer.limit_val_batches=4", "test=true"]
    overrides += ["metrics=null", "optimized_metric=null", "callbacks.progress_bar=null"]
    images = SeenImages()
    metrics = train(compose_train(overrides, tmp_path), extra_callbacks=[images])
    assert len(images.seen["test"]) == 10000, "trainer.test reads the official 10k test images"
    assert len(images.seen["val"]) == 4 * 128 and not set(images.seen["val"]) & set(images.seen["test"])
    assert math.isfinite(metrics["test/nelbo"]) and metrics["test/nelbo"] != metrics["val/nelbo"]


def test_digits_test_fraction_holds_out_three_disjoint_splits():
    dm = DigitsDataModule(resolution=16, channels=1, val_fraction=0.1, test_fraction=0.1, seed=3)
    assert dm.has_test_split
    dm.setup()
    splits = [set(s.indices) for s in (dm.train_set, dm.val_set, dm.test_set)]
    assert [len(s) for s in splits] == [1439, 179, 179]
    assert set.union(*splits) == set(range(1797)) and sum(map(len, splits)) == 1797
    assert next(iter(dm.test_dataloader())).shape[1:] == (1, 16, 16)
    same = DigitsDataModule(resolution=16, channels=1, val_fraction=0.1, seed=3)
    same.setup()
    assert set(same.val_set.indices) == splits[1], "val does not depend on test_fraction"
    assert len({dm.split_id(s) for s in ("train", "val", "test")} | {same.split_id("val")}) == 4


def test_fashion_mnist_layout_and_rgb_conversion(tmp_path):
    write_fashion_mnist(tmp_path)
    dm = FashionMNISTDataModule(root=str(tmp_path), resolution=32, channels=3, batch_size=4)
    batch = first_batch(dm)
    assert batch.shape == (4, 3, 32, 32)
    assert torch.equal(batch[:, 0], batch[:, 1]), "grey images expand to identical RGB channels"
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (18, 2, 6)


def test_mnist_files_found_wherever_data_root_points(tmp_path):
    """data.root at MNIST/, at its raw/, or at any folder of the four files, gzipped or not, named as
    torchvision or as Kaggle's copy (train-images.idx3-ubyte) names them; never another dataset's folder."""
    write_fashion_mnist(tmp_path / "tv")
    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    kaggle = tmp_path / "kaggle"
    kaggle.mkdir()
    for f in raw.iterdir():
        (kaggle / f.name.removesuffix(".gz").replace("-idx", ".idx")).write_bytes(
            gzip.decompress(f.read_bytes())
        )
    expected = first_batch(FashionMNISTDataModule(root=str(tmp_path / "tv"), resolution=28, batch_size=4))
    for root in (raw.parent, raw, kaggle):
        dm = FashionMNISTDataModule(root=str(root), resolution=28, batch_size=4)
        assert torch.equal(first_batch(dm), expected), root
        assert len(dm.test_set) == 6
    with pytest.raises(FileNotFoundError, match="MNIST not found"):
        MNISTDataModule(root=str(raw.parent)).setup()


def test_cifar10_layout(tmp_path):
    write_cifar10(tmp_path)
    dm = CIFAR10DataModule(root=str(tmp_path), resolution=32, channels=3, batch_size=4)
    check_images(first_batch(dm), 3, 32)
    inside = CIFAR10DataModule(root=str(tmp_path / "cifar-10-batches-py"), resolution=32, batch_size=4)
    assert torch.equal(first_batch(inside), first_batch(dm)), "data.root may name the batches' folder"
    (tmp_path / "packed").mkdir()
    (tmp_path / "packed" / "cifar-10-python.tar.gz").write_bytes(b"")
    with pytest.raises(
        FileNotFoundError, match=r"cifar-10-python.tar.gz is there: extract it first: `tar xzf"
    ):
        CIFAR10DataModule(root=str(tmp_path / "packed")).setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (18, 2, 4)


def test_cifar10_pickled_by_python3_with_bytes_keys(tmp_path):
    """Copies of CIFAR-10 re-pickled by Python 3 (keys and class names as bytes, as ``encoding="bytes"``
    loads the official files) read as the official ones; a batch of another format names the file and keys."""
    official = write_cifar10(tmp_path / "official")
    copy = tmp_path / "copy" / "cifar-10-batches-py"
    copy.mkdir(parents=True)
    for path in (official / "cifar-10-batches-py").iterdir():
        with open(path, "rb") as f:
            batch = pickle.load(f)
        as_bytes = {
            k.encode(): [n.encode() for n in v] if k == "label_names" else v for k, v in batch.items()
        }
        with open(copy / path.name, "wb") as f:
            pickle.dump(as_bytes, f)
    ours, theirs = (
        CIFAR10DataModule(root=str(r), labels=True, batch_size=4) for r in (official, copy.parent)
    )
    (x, y), (x2, y2) = first_batch(ours), first_batch(theirs)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert theirs.class_names == ours.class_names == [f"class{i}" for i in range(10)]
    with open(copy / "test_batch", "wb") as f:
        pickle.dump({"images": np.zeros((2, 3072), np.uint8)}, f)
    with pytest.raises(
        FileNotFoundError, match=r"test_batch is not a CIFAR-10 python batch: it lacks \['data', 'labels'\]"
    ):
        CIFAR10DataModule(root=str(copy)).setup()
    (copy / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(FileNotFoundError, match="test_batch is not a CIFAR-10 python pickle"):
        CIFAR10DataModule(root=str(copy)).setup()


@pytest.mark.parametrize("resolution", [32, 64])
def test_celeba_plain_folder(tmp_path, resolution):
    write_celeba(tmp_path / "img_align_celeba")
    dm = CelebADataModule(root=str(tmp_path), resolution=resolution, batch_size=4, num_workers=0)
    check_images(first_batch(dm), 3, resolution)
    assert len(dm.train_set) + len(dm.val_set) == 12 and not dm.has_test_split


def test_celeba_torchvision_layout_uses_official_partition(tmp_path):
    write_celeba(tmp_path / "celeba" / "img_align_celeba", n=10)
    split = ["0"] * 6 + ["1"] * 3 + ["2"]
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text(
        "".join(f"{i:06d}.jpg {s}\n" for i, s in enumerate(split, 1))
    )
    dm = CelebADataModule(root=str(tmp_path), resolution=64, batch_size=2, num_workers=0)
    assert dm.has_test_split
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (6, 3, 1)
    assert [f.name for f in dm.test_set.files] == ["000010.jpg"]


def test_celeba_kaggle_layout_uses_its_csv_partition(tmp_path):
    """Kaggle's copy: img_align_celeba/img_align_celeba/*.jpg and list_eval_partition.csv (with a header)."""
    write_celeba(tmp_path / "img_align_celeba" / "img_align_celeba", n=10)
    split = ["0"] * 5 + ["1"] * 3 + ["2"] * 2
    (tmp_path / "list_eval_partition.csv").write_text(
        "image_id,partition\n" + "".join(f"{i:06d}.jpg,{s}\n" for i, s in enumerate(split, 1))
    )
    dm = CelebADataModule(root=str(tmp_path), resolution=32, batch_size=2, num_workers=0)
    assert dm.has_test_split
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (5, 3, 2)
    assert [f.name for f in dm.test_set.files] == ["000009.jpg", "000010.jpg"]


def test_celeba_still_zipped_names_the_unzip_command(tmp_path):
    with zipfile.ZipFile(tmp_path / "img_align_celeba.zip", "w") as archive:
        archive.writestr("img_align_celeba/000001.jpg", b"")
    with pytest.raises(
        FileNotFoundError, match=r"found only img_align_celeba.zip.*unzip it first: `unzip .*"
    ):
        CelebADataModule(root=str(tmp_path), resolution=32).setup()


def test_image_folder_recursive_and_grey(tmp_path):
    write_image_folder(tmp_path)
    dm = ImageFolderDataModule(root=str(tmp_path), resolution=16, channels=1, batch_size=5, num_workers=0)
    batch = first_batch(dm)
    assert batch.shape == (5, 1, 16, 16)
    assert len(dm.train_set) + len(dm.val_set) == 6
    assert not dm.has_test_split
    with pytest.raises(ConfigError, match=r"data=image_folder has no test split: set data.test_fraction"):
        dm.test_dataloader()


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda root: MNISTDataModule(root=root), "MNIST/raw/train-images-idx3-ubyte"),
        (lambda root: CIFAR10DataModule(root=root), "cifar-10-batches-py"),
        (lambda root: CelebADataModule(root=root), "img_align_celeba"),
        (lambda root: ImageFolderDataModule(root=root), "No images"),
        (lambda root: MNISTDataModule(root=None), "data.root is not set"),
    ],
)
def test_missing_dataset_says_where_and_what(tmp_path, make, needle):
    with pytest.raises(DatasetNotFoundError) as err:
        make(str(tmp_path)).setup("fit")
    message = str(err.value)
    assert needle in message
    assert "data.root" in message or "image files" in message


def test_an_image_folder_given_as_a_file_says_so(tmp_path):
    (tmp_path / "cat.png").write_bytes(b"")
    with pytest.raises(
        DatasetNotFoundError, match="cat.png is a file, not a folder: .* the folder that holds"
    ):
        ImageFolderDataModule(root=str(tmp_path / "cat.png")).setup("fit")


def test_bad_batch_size_is_rejected():
    with pytest.raises(ValueError, match="data.batch_size must be a positive integer"):
        DigitsDataModule(batch_size=0)


@pytest.mark.parametrize("options", [{}, {"labels": True}, {"binarize": "dynamic"}])
def test_batched_fetch_equals_one_image_at_a_time(mnist_root, options):
    """The loaders fetch a batch in one op (``__getitems__``): the same images and labels as item by item
    (a binarised eval split: the same fixed samples)."""
    dm = MNISTDataModule(root=str(mnist_root), resolution=28, channels=1, seed=3, **options)
    dm.setup()
    indices = [5, 0, 17, 5, 5999]
    for split in (dm.val_set, dm.test_set, *([] if options.get("binarize") else [dm.train_set])):
        batched, single = split.__getitems__(indices), [split[i] for i in indices]
        assert len(batched) == len(single)
        for a, b in zip(batched, single):
            assert all(map(torch.equal, a, b)) if options.get("labels") else torch.equal(a, b)


def test_dynamic_binarisation_of_mnist(mnist_root):
    """data.binarize=dynamic: 0/1 pixels whose mean is the grey level; training draws anew at each read,
    val and test keep one seeded sample per image (the same in a second datamodule)."""
    dm = MNISTDataModule(root=str(mnist_root), resolution=28, channels=1, binarize="dynamic", seed=5)
    grey = MNISTDataModule(root=str(mnist_root), resolution=28, channels=1, seed=5)
    dm.setup(), grey.setup()
    intensity = (grey.train_set[7] + 1) / 2
    one_by_one = torch.stack([dm.train_set[7] for _ in range(400)])
    batched = torch.stack(dm.train_set.__getitems__([7] * 400))  # the DataLoader's batched fetch
    for reads in (one_by_one, batched):
        assert set(reads.unique().tolist()) == {-1.0, 1.0}
        assert not torch.equal(reads[0], reads[1]), "a new sample at each read"
        assert (((reads + 1) / 2).mean(0) - intensity).abs().max() < 0.12, "E[pixel] = its grey level"
    again = MNISTDataModule(root=str(mnist_root), resolution=28, channels=1, binarize="dynamic", seed=5)
    again.setup()
    for split in ("val_set", "test_set"):
        fixed = getattr(dm, split)
        assert torch.equal(fixed[3], fixed[3]) and torch.equal(fixed[3], getattr(again, split)[3])
        assert not torch.equal(fixed[3], fixed[4])
    assert dm.split_id("test") != grey.split_id("test"), "cached statistics keep the two apart"
    with pytest.raises(ConfigError, match="data.binarize='static' is unknown"):
        MNISTDataModule(root=str(mnist_root), binarize="static")


def write_transparent_images(root):
    """A black glyph on fully transparent pixels that are black too (as in many icon sets), in the modes
    such files come in: RGBA, LA, and a palette PNG with a transparent entry."""
    glyph = np.zeros((24, 24), dtype=bool)
    glyph[8:16, 8:16] = True
    alpha = np.where(glyph, 255, 0).astype(np.uint8)
    black = np.zeros((24, 24), dtype=np.uint8)
    Image.fromarray(np.dstack([black, black, black, alpha]), "RGBA").save(root / "rgba.png")
    Image.fromarray(np.dstack([black, alpha]), "LA").save(root / "la.png")
    palette = Image.fromarray(np.where(glyph, 0, 1).astype(np.uint8), "P")
    palette.putpalette([0, 0, 0, 0, 0, 0])  # entry 1 (the background) is black and transparent
    palette.save(root / "palette.png", transparency=1)
    return glyph


@pytest.mark.parametrize("channels", [1, 3])
def test_transparent_images_are_painted_over_the_background(tmp_path, channels):
    """Dropping alpha would turn every image into a black square; transparency is flattened onto
    data.background (white by default) in image folders and shards alike, without PIL's palette warning."""
    glyph = write_transparent_images(tmp_path)
    for background, fill in [("white", 1.0), ("black", -1.0), ("#808080", 128 / 127.5 - 1)]:
        dm = ImageFolderDataModule(
            root=str(tmp_path), resolution=24, channels=channels, background=background, num_workers=0
        )
        dm.setup()
        files = dm.train_set.dataset
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            images = [files[i] for i in range(len(files))]
            images.append(decode_image((tmp_path / "rgba.png").read_bytes(), channels, 24, dm.background))
        for image in images:
            assert image.shape == (channels, 24, 24)
            assert torch.allclose(image[:, torch.from_numpy(glyph)], torch.tensor(-1.0)), "the glyph"
            assert torch.allclose(image[:, 0, 0], torch.tensor(fill), atol=1e-6), f"{background} background"
    assert dm.split_id("val") != ImageFolderDataModule(root=str(tmp_path), resolution=24).split_id("val")
    with pytest.raises(ConfigError, match=r"data.background='transparent' is not a colour: use a name"):
        ImageFolderDataModule(root=str(tmp_path), background="transparent")


def test_16_bit_grey_images_keep_their_grey_levels(tmp_path):
    """PIL clips 16-bit values at 255 when converting (a gradient became almost all white): the top 8 bits
    are kept instead, in PNG (I;16) and TIFF (I) files alike."""
    gradient = np.linspace(0, 65535, 32 * 32).reshape(32, 32)
    Image.fromarray(gradient.astype(np.uint16)).save(tmp_path / "depth.png")
    Image.fromarray(gradient.astype(np.int32)).save(tmp_path / "scan.tif")
    dm = ImageFolderDataModule(root=str(tmp_path), resolution=32, channels=3, val_fraction=0.5, num_workers=0)
    dm.setup()
    expected = torch.from_numpy((gradient.astype(np.int64) >> 8) / 127.5 - 1).float()
    for image in (dm.train_set[0], dm.val_set[0]):
        assert torch.allclose(image, expected.expand(3, -1, -1), atol=1e-5)


def test_photos_are_turned_upright_by_their_exif_orientation(tmp_path):
    """A phone stores a portrait photo as a landscape JPEG with EXIF Orientation 6 (turn 90 degrees
    clockwise to view): it is read upright."""
    upright = np.zeros((48, 32, 3), dtype=np.uint8)  # portrait: a white top half
    upright[:24] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.rot90(upright).copy()).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    Image.fromarray(upright).save(tmp_path / "plain.png")
    dm = ImageFolderDataModule(root=str(tmp_path), resolution=8, channels=1, val_fraction=0.5, num_workers=0)
    dm.setup()
    for image in (dm.train_set[0], dm.val_set[0]):  # the centre square: white above, black below
        assert image[0, :3].mean() > 0.9 and image[0, -3:].mean() < -0.9


def test_large_jpegs_decode_at_reduced_scale_to_nearly_the_same_pixels(tmp_path):
    """Without a pixel crop, a 1600x1200 JPEG for 32 px is decoded at 1/8 scale (PIL's draft): the image is
    within two grey levels of the full decode's (the same geometry through a crop of the short side)."""
    y, x = np.mgrid[0:1200, 0:1600]
    photo = np.stack([np.sin(x / 90), np.cos(y / 60), np.sin((x + y) / 150)], -1) * 100 + 128
    Image.fromarray(photo.astype(np.uint8)).save(tmp_path / "photo.jpg", quality=95)
    reduced, full = (ImageFiles([tmp_path / "photo.jpg"], 3, 32, crop=crop) for crop in (None, 1200))
    assert not torch.equal(reduced[0], full[0]), "another decode"
    assert (reduced[0] - full[0]).abs().max() < 2 / 127.5


def test_a_folder_too_small_to_split_says_how_many_images_it_needs(tmp_path):
    Image.new("RGB", (16, 16)).save(tmp_path / "only.png")
    with pytest.raises(ConfigError, match=r"has 1 image: too few .* add images, at least 2$"):
        ImageFolderDataModule(root=str(tmp_path), resolution=8).setup()
    with pytest.raises(ConfigError, match=r"at least 3$"):
        ImageFolderDataModule(root=str(tmp_path), resolution=8, test_fraction=0.1).setup()


@pytest.mark.parametrize("size, world", [(10, 3), (2, 4), (1000, 2)])
def test_training_shuffles_shard_across_processes_as_lightnings_wrapper_did(size, world):
    """Each process reads what Lightning's DistributedSamplerWrapper gave it before the samplers sharded
    themselves: the same epoch's order, padded with its first indices, every world-th from the rank."""
    from lightning_fabric.utilities.distributed import DistributedSamplerWrapper

    lengths = torch.randint(1, 50, (size,), generator=torch.Generator().manual_seed(0))
    for make in (
        lambda **p: EpochShuffle(size, 5, **p),
        lambda **p: LengthGroupedShuffle(lengths, 2, 5, 2, **p),
    ):
        one = make(num_replicas=1, rank=0)
        one.set_epoch(3)
        for rank in range(world):
            ours, theirs = (
                make(num_replicas=world, rank=rank),
                DistributedSamplerWrapper(one, world, rank, False),
            )
            ours.set_epoch(3)
            theirs.set_epoch(3)
            assert list(ours) == list(theirs) and len(ours) == len(theirs) == -(-size // world)


@pytest.mark.parametrize("size", [1, 1000, 3_000_000])
def test_an_epochs_order_is_the_int64_permutation_runs_were_trained_on(size):
    """The int32 permutation is the order runs before it drew in int64: a checkpoint taken mid-epoch by them
    resumes on the same batches."""
    sampler = EpochShuffle(size, seed=2)
    sampler.set_epoch(4)
    before = torch.randperm(size, generator=torch.Generator().manual_seed(2 * 1_000_003 + 4))
    assert sampler.permutation().dtype == torch.int32
    assert torch.equal(sampler.permutation().long(), before)


def test_a_shuffle_of_millions_of_examples_holds_no_list_of_them():
    """The windows of a long text are tens of millions of examples: their order stays one tensor, handed out a
    chunk at a time (a list of 10M Python ints took ~400 MB)."""
    sampler = EpochShuffle(10_000_000, seed=1, num_replicas=1, rank=0)
    tracemalloc.start()
    count = sum(1 for _ in sampler)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 10_000_000 and peak < 16 * 2**20, f"{peak / 2**20:.0f} MB of Python objects"
