"""Normalizing flow: exact likelihood by the change of variables, sampling in one inverse pass.

The worked example of docs/adding-a-family.md: a network (``genlab.nets.flow``), this module,
``conf/model/flow.yaml`` and one line in ``genlab.families``. 8-bit pixels are dequantised with
uniform noise (Theis et al. 2016), so ``nll`` (nats per image) and ``bpd`` bound the discrete NLL.
"""

import math

import torch
from torch import nn

from genlab.interfaces import ImageGenerator, reject_conditions
from genlab.models import GenerativeModel, OptimizerFactory


class Flow(GenerativeModel, ImageGenerator):
    fallback_metric = "val/bpd"
    progress_bar = ("bpd",)

    def __init__(
        self,
        net: nn.Module,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_schedule: str = "constant",
        warmup_steps: int = 0,
        temperature: float = 1.0,
        optimizer: OptimizerFactory | None = None,
    ):
        super().__init__(optimizer)
        self.save_hyperparameters(ignore=["net", "optimizer"])
        self.net = net

    def nll(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Dequantised -log p(x) in nats per image, (B,); x in [-1, 1] holds 8-bit levels."""
        levels = ((x.float() + 1) * 127.5).round()
        noise = torch.rand(x.shape, generator=generator).to(x.device)
        y = (levels + noise) / 128 - 1  # continuous in [-1, 1]: density on a 2/256-wide bin per level
        z, log_det = self.net(y)
        log_prior = -0.5 * (z**2 + math.log(2 * math.pi)).sum(1)
        return -(log_prior + log_det) + z.shape[1] * math.log(128)

    def terms(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        nll = self.nll(x, generator).mean()
        return {"loss": nll, "bpd": nll / (x[0].numel() * math.log(2))}

    def training_loss(self, batch, step: int) -> tuple[torch.Tensor, dict]:
        terms = self.terms(self.inputs(batch))
        return terms["loss"], terms

    def validation_step(self, batch, batch_idx: int) -> None:
        generator = torch.Generator().manual_seed(batch_idx)  # the same dequantisation every validation
        terms = self.terms(self.inputs(batch), generator)
        self.log_dict({f"{self.eval_prefix}/{k}": v for k, v in terms.items()}, prog_bar=True, sync_dist=True)

    @torch.no_grad()
    def sample(self, num: int, generator: torch.Generator | None = None, **conditions) -> torch.Tensor:
        """``num`` images in [-1, 1]: latents at ``temperature`` x the prior's scale, mapped back by the flow."""
        reject_conditions(self, conditions)
        z = torch.randn(num, self.net.dim, generator=generator).to(self.device) * self.hparams.temperature
        return self.net.inverse(z).clamp(-1, 1)
