"""Inception Score (Salimans et al. 2016) by torch-fidelity's own function, on logits this metric collects
from the shared Inception pass: softmax of the 1008 ``logits_unbiased``, samples shuffled with a fixed seed,
10 splits, exp(mean KL(p(y|x) || p(y))) per split, mean and standard deviation over the splits.
(torchmetrics' ``InceptionScore`` shuffles with the global RNG: not torch-fidelity's number.)"""

import torch
from torch import Tensor

from genlab.errors import ConfigError
from genlab.metrics.inception import InceptionFeatures
from genlab.metrics.real_stats import GatheredFeatures


class InceptionScore(GatheredFeatures):
    """IS of the generated images (``update(images, real=False)``; real images are ignored)."""

    LIST_STATES = {"logits": InceptionFeatures.num_logits}
    full_state_update = False

    def __init__(self, extractor: InceptionFeatures, splits: int = 10, seed: int = 2020, **kwargs):
        super().__init__(**kwargs)
        self.extractor, self.splits, self.seed = extractor, splits, seed
        self.add_state("logits", [], dist_reduce_fx="cat")

    def update(self, images: Tensor, real: bool) -> None:
        if not real:
            self.logits.append(self.extractor.logits(images))

    def compute(self) -> tuple[Tensor, Tensor]:
        from torch_fidelity.metric_isc import isc_features_to_metric

        logits = self.features("logits").cpu()
        if len(logits) < self.splits:
            raise ConfigError(
                f"The Inception Score needs at least {self.splits} samples (its splits), got {len(logits)}: raise "
                "metrics.num_samples or lower metrics.isc.splits."
            )
        score = isc_features_to_metric(
            logits, self.splits, shuffle=True, rng_seed=self.seed
        )  # torch-fidelity's
        return torch.tensor(score["inception_score_mean"]), torch.tensor(score["inception_score_std"])
