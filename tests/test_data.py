"""Image datamodules on real data (../shared MNIST) and on small folders written in each layout."""

import pytest
import torch

from genlab.data.images import (
    CelebADataModule,
    CIFAR10DataModule,
    DatasetNotFoundError,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
)
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
    assert len(dm.train_set) + len(dm.val_set) == 1797


def test_mnist_from_shared_gz_files(mnist_root):
    dm = MNISTDataModule(root=str(mnist_root), resolution=32, channels=1, batch_size=8)
    check_images(first_batch(dm, "val"), 1, 32)
    assert (len(dm.train_set), len(dm.val_set)) == (60000, 10000)
    assert dm.dataset_id == "mnist-val10000-1x32px"


def test_fashion_mnist_layout_and_rgb_conversion(tmp_path):
    write_fashion_mnist(tmp_path)
    dm = FashionMNISTDataModule(root=str(tmp_path), resolution=32, channels=3, batch_size=4)
    batch = first_batch(dm)
    assert batch.shape == (4, 3, 32, 32)
    assert torch.equal(batch[:, 0], batch[:, 1]), "grey images expand to identical RGB channels"
    assert len(dm.val_set) == 6


def test_cifar10_layout(tmp_path):
    write_cifar10(tmp_path)
    dm = CIFAR10DataModule(root=str(tmp_path), resolution=32, channels=3, batch_size=4)
    check_images(first_batch(dm), 3, 32)
    assert (len(dm.train_set), len(dm.val_set)) == (20, 4)


@pytest.mark.parametrize("resolution", [32, 64])
def test_celeba_plain_folder(tmp_path, resolution):
    write_celeba(tmp_path / "img_align_celeba")
    dm = CelebADataModule(root=str(tmp_path), resolution=resolution, batch_size=4, num_workers=0)
    check_images(first_batch(dm), 3, resolution)
    assert len(dm.train_set) + len(dm.val_set) == 12


def test_celeba_torchvision_layout_uses_official_partition(tmp_path):
    write_celeba(tmp_path / "celeba" / "img_align_celeba", n=10)
    split = ["0"] * 6 + ["1"] * 3 + ["2"]
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text(
        "".join(f"{i:06d}.jpg {s}\n" for i, s in enumerate(split, 1))
    )
    dm = CelebADataModule(root=str(tmp_path), resolution=64, batch_size=2, num_workers=0)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set)) == (6, 3)


def test_image_folder_recursive_and_grey(tmp_path):
    write_image_folder(tmp_path)
    dm = ImageFolderDataModule(root=str(tmp_path), resolution=16, channels=1, batch_size=5, num_workers=0)
    batch = first_batch(dm)
    assert batch.shape == (5, 1, 16, 16)
    assert len(dm.train_set) + len(dm.val_set) == 6


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


def test_bad_batch_size_is_rejected():
    with pytest.raises(ValueError, match="data.batch_size must be a positive integer"):
        DigitsDataModule(batch_size=0)
