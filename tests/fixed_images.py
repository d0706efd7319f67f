"""Fixed image sets as a 'generator', a datamodule and torch-fidelity input: FID/KID on chosen images."""

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from genlab.metrics.inception import to_uint8


class FixedSamples(pl.LightningModule):
    """A 'generator' whose samples are a fixed image set, served in order."""

    def __init__(self, images: torch.Tensor):
        super().__init__()
        self.images, self.cursor = images, 0

    def on_validation_epoch_start(self) -> None:
        self.cursor = 0

    def validation_step(self, batch, batch_idx: int) -> None:
        pass

    on_test_epoch_start = on_validation_epoch_start
    test_step = validation_step

    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        out = self.images[self.cursor : self.cursor + num]
        self.cursor += num
        return out.to(self.device)


class RealImages(pl.LightningDataModule):
    """Real images as the validation loader (and ``test_images`` as the test loader); ``split_id``
    names their cached statistics: ``name`` for val, ``name-test`` for test."""

    def __init__(
        self,
        images: torch.Tensor,
        batch_size: int = 16,
        name: str = "mnist-test-slice",
        test_images: torch.Tensor | None = None,
    ):
        super().__init__()
        self.images, self.batch_size, self.name, self.test_images = images, batch_size, name, test_images

    def split_id(self, split: str) -> str:
        return self.name if split == "val" else f"{self.name}-{split}"

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.images, batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_images, batch_size=self.batch_size)


class UInt8Set(Dataset):
    """torch-fidelity's tensor input: uint8 (3, H, W) images."""

    def __init__(self, images: torch.Tensor):
        self.images = to_uint8(images)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def torch_fidelity_metrics(real: torch.Tensor, fake: torch.Tensor, weights, **kwargs) -> dict:
    """The reference FID/KID: torch-fidelity's ``calculate_metrics`` on the same images, CPU, no cache."""
    import torch_fidelity

    return torch_fidelity.calculate_metrics(
        input1=UInt8Set(fake),
        input2=UInt8Set(real),
        cuda=False,
        fid=True,
        kid=True,
        feature_extractor_weights_path=str(weights),
        cache=False,
        verbose=False,
        **kwargs,
    )
