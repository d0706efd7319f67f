"""Classifier-free guidance (Ho & Salimans 2022): one network trained with and without the class label
(label dropout), sampled with eps_uncond + w * (eps_cond - eps_uncond). w = 0 is the unconditional model,
w = 1 the conditional one, w > 1 trades diversity for fidelity. Works for every sampler: it only changes
what "the network" returns (eps or v, both linear in the guidance)."""

import torch
from torch import nn


def drop_labels(labels: torch.Tensor, null_label: int, prob: float, generator=None) -> torch.Tensor:
    """``labels`` with a share ``prob`` replaced by ``null_label`` (training of the unconditional branch)."""
    if prob <= 0:
        return labels
    drop = torch.rand(labels.shape, generator=generator).to(labels.device) < prob
    return labels.masked_fill(drop, null_label)


class Guided(nn.Module):
    """``net(x, t)`` for the samplers: the guided prediction for fixed ``labels`` at scale ``guidance``
    (one batched call for both branches; a single call at w = 0 or 1)."""

    def __init__(self, net: nn.Module, labels: torch.Tensor, guidance: float):
        super().__init__()
        self.net, self.labels, self.guidance = net, labels, guidance

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.guidance == 1:
            return self.net(x, t, self.labels)
        if self.guidance == 0:
            return self.net(x, t, None)
        null = torch.full_like(self.labels, self.net.null_label)
        cond, uncond = self.net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([self.labels, null])).chunk(2)
        return uncond + self.guidance * (cond - uncond)
