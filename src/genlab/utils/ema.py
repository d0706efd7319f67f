"""Exponential moving average of a network's weights, shared by every model family."""

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from genlab.errors import ConfigError


class EMA(AveragedModel):
    """Frozen EMA copy of ``model`` (torch's ``AveragedModel``); call :meth:`update` after each step.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (as TensorFlow's
    ExponentialMovingAverage with ``num_updates``), so short runs are not dominated by the
    initial weights. Buffers (BatchNorm statistics) are copied from the live model. The copy
    never receives gradients, so DDP does not see it as unused.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 < decay < 1.0:
            raise ConfigError(
                f"model.ema_decay must be in (0, 1), got {decay}: e.g. model.ema_decay=0.999 (null: no EMA)"
            )
        self.decay = decay
        super().__init__(model, multi_avg_fn=self._lerp, use_buffers=False)
        self.requires_grad_(False)
        self.eval()

    def _lerp(self, ema_params: list, params: list, num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)
        decay = min(self.decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.update_parameters(model)
        for ema_buf, buf in zip(self.module.buffers(), model.buffers()):
            ema_buf.copy_(buf)

    def train(self, mode: bool = True) -> "EMA":
        return super().train(False)  # always in eval mode
