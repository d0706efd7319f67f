"""Inception Score (Salimans et al. 2016) as torch-fidelity computes it: softmax of the 1008
``logits_unbiased`` of the FID Inception network, samples shuffled with a fixed seed, 10 splits,
exp(mean KL(p(y|x) || p(y))) per split, reported as mean and standard deviation over the splits."""

import numpy as np
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
        logits = self.features("logits").cpu()
        n = len(logits)
        if n < self.splits:
            raise ConfigError(
                f"The Inception Score needs at least {self.splits} samples (its splits), got {n}: raise "
                "metrics.num_samples or lower metrics.isc.splits."
            )
        logits = logits[np.random.RandomState(self.seed).permutation(n)].double()
        p, log_p = logits.softmax(dim=1), logits.log_softmax(dim=1)
        scores = []
        for i in range(self.splits):
            part = slice(i * n // self.splits, (i + 1) * n // self.splits)
            marginal = p[part].mean(dim=0, keepdim=True)
            scores.append((p[part] * (log_p[part] - marginal.log())).sum(dim=1).mean().exp())
        scores = torch.stack(scores)
        return scores.mean(), scores.std(unbiased=False)
