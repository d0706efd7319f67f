"""The standard FID InceptionV3 (TF 2015-12-05 weights): locating weights and extracting features.

Settings follow the reference implementation (torch-fidelity / TTUR): uint8 input, TF1-style
bilinear resize to 299x299 without antialiasing, 2048-d pool features, float64 statistics.
"""

import logging
import os
from pathlib import Path

import torch
from torch import nn

from genlab.errors import GenlabError

log = logging.getLogger(__name__)

WEIGHTS_ENV = "GENLAB_FID_WEIGHTS"
WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's file name
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_FILE}"


class InceptionWeightsNotFound(GenlabError, FileNotFoundError):
    """A weights path was given but holds no file."""


def find_inception_weights(path: str | None = None, download: bool = True) -> Path | None:
    """Weights from ``path``, else ``$GENLAB_FID_WEIGHTS``, else torch hub's cache (downloading if allowed).

    A path that is given but missing is an error; ``None`` means no weights could be found.
    """
    for given, origin in (
        (path, "metrics.fid.weights_path"),
        (os.environ.get(WEIGHTS_ENV), f"${WEIGHTS_ENV}"),
    ):
        if given:
            p = Path(given).expanduser()
            if not p.is_file():
                raise InceptionWeightsNotFound(
                    f"{origin} points to {p}, which is not a file. Give the path of the FID InceptionV3 "
                    f"weights ({WEIGHTS_FILE}, torch-fidelity's format)."
                )
            return p
    cached = Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE
    if cached.is_file():
        return cached
    if download:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(WEIGHTS_URL, str(cached), progress=False)
            return cached
        except Exception as err:  # offline, proxy, ...
            log.debug("Could not download the FID Inception weights from %s: %s", WEIGHTS_URL, err)
    return None


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images -> uint8 with rounding (not truncation), grey expanded to RGB."""
    images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


class InceptionFeatures(nn.Module):
    """2048-d InceptionV3 pool features of uint8 images, and the 1008 ``logits_unbiased`` of the same pass.

    One network pass serves every metric: the last result is memoised by input identity, so FID, KID,
    precision/recall (pool features) and the Inception Score (``logits``) updated with the same batch run
    the network once (``passes`` counts the runs). Autocast is disabled: features are float32. The weights
    are channels-last, which CPU convolutions run 1.6x faster (features within 1e-5 of the contiguous layout's).
    """

    num_features = 2048
    num_logits = 1008

    def __init__(self, weights_path: str | Path):
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.net = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=[str(self.num_features), "logits_unbiased"],
            feature_extractor_weights_path=str(weights_path),
            antialias=False,
        ).to(memory_format=torch.channels_last)
        self._last: tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] | None = None
        self.passes = 0

    @property
    def has_classifier(self) -> bool:
        """False for weights whose classifier layer is all zeros (FID-only files): their logits are constant."""
        return bool(self.net.fc.weight.abs().sum() > 0)

    def _embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._last is None or self._last[0] is not images:
            with torch.autocast(images.device.type, enabled=False), torch.no_grad():
                pool, logits = self.net._torch_fidelity_forward(images)
            self.passes += 1
            self._last = (images, (pool.reshape(len(images), -1).float(), logits.float()))
        return self._last[1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._embed(images)[0]

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self._embed(images)[1]

    def forget(self) -> None:
        self._last = None

    def train(self, mode: bool = True) -> "InceptionFeatures":
        return super().train(False)
