"""Labelled image datamodules (data.labels=true) yield (image, class) pairs whose labels are the raw label
files' / folder names'; their class count reaches the model config; unlabelled data says so in one line."""

import gzip
import pickle
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from genlab.data.images import (
    CelebADataModule,
    CIFAR10DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
)
from genlab.errors import ConfigError
from genlab.metrics.classifier import train_classifier
from genlab.pipeline import fill_model_inputs, train
from tests.conftest import compose_train, quick_run
from tests.datasets import write_celeba, write_cifar10, write_fashion_mnist


def raw_idx_labels(path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    return np.frombuffer(data, dtype=np.uint8, offset=8)


def labels_of(dataset) -> torch.Tensor:
    return torch.stack([torch.as_tensor(dataset[i][1]) for i in range(len(dataset))])


def indices_of(subset) -> list[int]:
    return list(subset.indices)


def check_split_labels(dm, train_labels: np.ndarray, test_labels: np.ndarray | None) -> None:
    """Every split's labels are the raw labels of the images it holds (carved subsets by their indices)."""
    dm.setup()
    for subset in (dm.train_set, dm.val_set):
        assert torch.equal(labels_of(subset), torch.from_numpy(train_labels[indices_of(subset)]).long())
    if test_labels is not None:
        assert torch.equal(labels_of(dm.test_set), torch.from_numpy(test_labels.astype(np.int64)))
    image, label = dm.val_set[0]
    assert image.shape[0] == dm.channels and label.dtype == torch.int64


def test_mnist_labels_are_the_raw_label_files(mnist_root):
    raw = mnist_root / "MNIST" / "raw"
    dm = MNISTDataModule(root=str(mnist_root), labels=True, channels=1, val_fraction=0.0005)
    dm.setup()
    train_labels = raw_idx_labels(raw / "train-labels-idx1-ubyte.gz")
    val = indices_of(dm.val_set)
    assert torch.equal(labels_of(dm.val_set), torch.from_numpy(train_labels[val]).long())
    test_labels = raw_idx_labels(raw / "t10k-labels-idx1-ubyte.gz")
    first = torch.stack([dm.test_set[i][1] for i in range(200)])
    assert torch.equal(first, torch.from_numpy(test_labels[:200].astype(np.int64)))
    assert dm.class_names == [str(d) for d in range(10)] and dm.model_inputs() == {"num_classes": 10}


def test_fashion_mnist_and_cifar10_labels_and_class_names(tmp_path):
    root = write_fashion_mnist(tmp_path / "fashion")
    raw = root / "FashionMNIST" / "raw"
    dm = FashionMNISTDataModule(root=str(root), labels=True, channels=1, val_fraction=0.2)
    check_split_labels(
        dm,
        raw_idx_labels(raw / "train-labels-idx1-ubyte.gz"),
        raw_idx_labels(raw / "t10k-labels-idx1-ubyte.gz"),
    )
    assert dm.class_names[0] == "T-shirt/top" and len(dm.class_names) == 10

    root = write_cifar10(tmp_path / "cifar", per_batch=6)
    folder = root / "cifar-10-batches-py"
    batches = [pickle.loads((folder / f"data_batch_{i}").read_bytes()) for i in range(1, 6)]
    test = pickle.loads((folder / "test_batch").read_bytes())
    dm = CIFAR10DataModule(root=str(root), labels=True, val_fraction=0.2)
    check_split_labels(dm, np.concatenate([b["labels"] for b in batches]), np.asarray(test["labels"]))
    assert dm.class_names == [f"class{i}" for i in range(10)], "read from batches.meta"


def test_digits_labels_are_sklearns_targets():
    from sklearn.datasets import load_digits

    dm = DigitsDataModule(labels=True, test_fraction=0.1)
    check_split_labels(dm, load_digits().target, None)
    assert torch.equal(
        labels_of(dm.test_set), torch.from_numpy(load_digits().target[indices_of(dm.test_set)])
    )


def test_image_folder_classes_are_its_subfolders_and_loose_files_are_refused(tmp_path):
    for name, shade in (("cat", 0), ("dog", 255), ("zebra", 128)):
        (tmp_path / "pets" / name / "more").mkdir(parents=True)
        for i in range(4):
            where = tmp_path / "pets" / name / ("more" if i % 2 else "")
            Image.new("RGB", (20, 20), (shade, i, 0)).save(where / f"{i}.png")
    dm = ImageFolderDataModule(root=str(tmp_path / "pets"), labels=True, resolution=8, val_fraction=0.25)
    dm.setup()
    assert dm.class_names == ["cat", "dog", "zebra"] and dm.model_inputs() == {"num_classes": 3}
    for subset in (dm.train_set, dm.val_set):
        for i, (_, label) in zip(subset.indices, subset, strict=True):
            assert (
                dm.class_names[label] == dm.train_set.dataset.files[i].relative_to(tmp_path / "pets").parts[0]
            )
    unlabelled = ImageFolderDataModule(root=str(tmp_path / "pets"), resolution=8)
    unlabelled.setup()
    assert isinstance(unlabelled.val_set[0], torch.Tensor) and unlabelled.model_inputs() == {}

    Image.new("RGB", (20, 20)).save(tmp_path / "pets" / "loose.png")
    with pytest.raises(
        ConfigError, match="1 image lies in .*pets itself, not in a class subfolder.*data.labels=false"
    ):
        ImageFolderDataModule(root=str(tmp_path / "pets"), labels=True).setup()
    write_celeba(tmp_path / "celeba" / "img_align_celeba", n=3)
    with pytest.raises(ConfigError, match="data=celeba has no labels"):
        CelebADataModule(root=str(tmp_path / "celeba"), labels=True).setup()


def test_class_count_fills_the_model_config_and_unconditional_models_train_on_labelled_data(tmp_path):
    cfg = compose_train([*quick_run("gan"), "data.labels=true"], tmp_path)
    from hydra.utils import instantiate
    from omegaconf import open_dict

    with_classes = cfg.copy()
    with open_dict(with_classes):
        with_classes.model.num_classes = None  # a conditional model's key: filled from the data

    dm = instantiate(cfg.data, _convert_="all")
    fill_model_inputs(with_classes, dm)
    assert with_classes.model.num_classes == 10
    metrics = train(cfg)  # the unconditional GAN reads the images of (image, label) batches
    assert np.isfinite(metrics["train/g_loss"])


def test_the_sample_classifier_trains_on_a_split_smaller_than_its_batch():
    """Batches of 128 with drop_last on 40 images gave no batch at all: training looped forever."""
    images, labels = torch.randn(40, 1, 8, 8), torch.arange(40) % 4
    finished = []
    data = TensorDataset(images, labels)
    worker = threading.Thread(
        target=lambda: finished.append(train_classifier(data, data, channels=1, num_classes=4, steps=5)),
        daemon=True,
    )
    worker.start()
    worker.join(timeout=60)
    assert finished, "the classifier's training did not end"
    assert 0 <= finished[0][1] <= 1
