"""Exponential moving average of a network's weights, shared by every model family."""

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class EMA(AveragedModel):
    """Frozen EMA copy of ``model`` (torch's ``AveragedModel``); call :meth:`update` after each step.

    Buffers (BatchNorm statistics) are copied from the live model, as is usual for GAN/diffusion EMA.
    The copy never receives gradients, so DDP does not see it as unused.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        super().__init__(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.update_parameters(model)
        for ema_buf, buf in zip(self.module.buffers(), model.buffers()):
            ema_buf.copy_(buf)

    def train(self, mode: bool = True) -> "EMA":
        return super().train(False)  # always in eval mode
