"""Variational autoencoder (Kingma & Welling 2014) with a choice of pixel likelihood.

Reported in nats per image: ``recon`` = -E_q[log p(x|z)], ``kl`` = KL(q(z|x) || N(0, I)),
``nelbo`` = recon + kl (the true bound, beta = 1) and ``bpd`` = nelbo / (D ln 2). ``loss`` is
the optimised recon + beta_t * kl, with beta_t warming up linearly over ``kl_warmup_steps``.
Likelihoods: ``bernoulli`` (inputs binarised at 0.5), ``gaussian`` (learned per-channel scale;
reported as a discrete likelihood over 256 bins) and ``discretized_gaussian`` (exact 8-bit bins).
With ``num_classes`` (labelled data, ``data.labels=true``) it is a conditional VAE: q(z|x, y), p(x|z, y),
and every figure is conditional on the class.
"""

import math

import torch
from torch import nn
from torchmetrics import SumMetric

from genlab.errors import ConfigError
from genlab.interfaces import ImageGenerator, Reconstructor, ReportsProtocol, reject_conditions
from genlab.models import GenerativeModel, OptimizerFactory
from genlab.models.conditioning import ClassConditional, check_num_classes

LIKELIHOODS = ("bernoulli", "gaussian", "discretized_gaussian")


class VAE(ClassConditional, GenerativeModel, ImageGenerator, Reconstructor, ReportsProtocol):
    fallback_metric = "val/nelbo"
    progress_bar = ("recon", "kl", "nelbo", "bpd")

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        latent_dim: int,
        likelihood: str = "discretized_gaussian",
        beta: float = 1.0,
        kl_warmup_steps: int = 0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_schedule: str = "constant",
        warmup_steps: int = 0,
        iw_samples: int = 0,
        num_classes: int | None = None,
        optimizer: OptimizerFactory | None = None,
    ):
        super().__init__(optimizer)
        check_num_classes(num_classes, encoder=encoder, decoder=decoder)
        if likelihood not in LIKELIHOODS:
            raise ConfigError(f"model.likelihood={likelihood!r} is unknown; choose one of {LIKELIHOODS}")
        self.save_hyperparameters(ignore=["encoder", "decoder", "optimizer"])
        self.encoder, self.decoder = encoder, decoder
        self.iw_images = SumMetric()  # images the importance-weighted NLL was averaged over (all ranks)
        self._protocol: dict[str, dict] = {}
        if likelihood != "bernoulli":  # learned per-channel pixel scale
            self.log_scale = nn.Parameter(torch.full((decoder.channels,), -2.0))

    # ---- likelihood ----
    def _target(self, x: torch.Tensor) -> torch.Tensor:
        return (x > 0).float() if self.hparams.likelihood == "bernoulli" else x

    def _observed(self, x: torch.Tensor) -> torch.Tensor:
        """What the model sees of ``x``: under ``bernoulli``, the binarised image (in {-1, 1}), so the encoder
        reads exactly the data the likelihood scores, not grey levels beside it."""
        return x.gt(0).to(x.dtype).mul(2).sub(1) if self.hparams.likelihood == "bernoulli" else x

    def log_likelihood(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) summed over pixels, in nats, (B,)."""
        kind, params, x = self.hparams.likelihood, params.float(), x.float()
        if kind == "bernoulli":
            return BernoulliLogProb.apply(params, x).flatten(1).sum(1)
        log_scale = self.log_scale.float().view(1, -1, 1, 1).clamp(min=-7.0)
        if kind == "gaussian":  # density on [-1, 1] times the bin width 2/256 -> probability of the bin
            log_density = (
                -0.5 * ((x - params) / log_scale.exp()) ** 2 - log_scale - 0.5 * math.log(2 * math.pi)
            )
            return (log_density + math.log(2 / 256)).flatten(1).sum(1)
        return discretized_gaussian_log_likelihood(x, params, log_scale).flatten(1).sum(1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The likelihood's mean as an image in [-1, 1]."""
        if self.hparams.likelihood == "bernoulli":
            return torch.sigmoid(params.float()) * 2 - 1
        return params.float().clamp(-1, 1)

    # ---- model ----
    def elbo_terms(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        target = self._target(x)
        mean, logvar = self.encoder(self._observed(x), labels)
        mean, logvar = mean.float(), logvar.float()
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()  # reparameterisation trick
        recon = -self.log_likelihood(self.decoder(z, labels), target).mean()
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(1).mean()
        nelbo = recon + kl
        return {"recon": recon, "kl": kl, "nelbo": nelbo, "bpd": nelbo / (x[0].numel() * math.log(2))}

    @torch.no_grad()
    def importance_weighted_nll(
        self, x: torch.Tensor, k: int, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """-log p(x[|y]) estimated with k importance samples (Burda et al. 2016), nats per image, (B,)."""
        target = self._target(x)
        mean, logvar = (t.float() for t in self.encoder(self._observed(x), labels))
        std = (0.5 * logvar).exp()
        log_w = []
        for _ in range(k):
            eps = torch.randn_like(mean)
            z = mean + eps * std
            log_q = (-0.5 * eps**2 - 0.5 * logvar - 0.5 * math.log(2 * math.pi)).sum(1)
            log_prior = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(1)
            log_w.append(self.log_likelihood(self.decoder(z, labels), target) + log_prior - log_q)
        return -(torch.logsumexp(torch.stack(log_w), 0) - math.log(k))

    @torch.no_grad()
    def sample(
        self,
        num: int,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | list[int] | None = None,
        **conditions,
    ) -> torch.Tensor:
        reject_conditions(self, conditions)
        labels = self.sample_labels(num, labels, generator)
        z = torch.randn(num, self.hparams.latent_dim, generator=generator).to(self.device)
        return self.mean(self.decoder(z, labels))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.mean(self.decoder(self.encoder(self._observed(x), labels)[0], labels))

    # ---- training ----
    def kl_weight(self, step: int) -> float:
        """beta, warmed up linearly from 0 over ``kl_warmup_steps`` optimizer steps."""
        warmup = self.hparams.kl_warmup_steps
        return self.hparams.beta * (min(1.0, step / warmup) if warmup else 1.0)

    def training_loss(self, batch, step: int) -> tuple[torch.Tensor, dict]:
        terms = self.elbo_terms(self.inputs(batch), self.batch_labels(batch))
        beta = self.kl_weight(step)
        loss = terms["recon"] + beta * terms["kl"]
        return loss, {**terms, "loss": loss, "beta": beta}

    def validation_step(self, batch, batch_idx: int) -> None:
        x, labels = self.inputs(batch), self.batch_labels(batch)
        metrics = self.elbo_terms(x, labels)
        if self.hparams.iw_samples:
            iw_nll = self.importance_weighted_nll(x, self.hparams.iw_samples, labels).mean()
            metrics.update({"iw_nll": iw_nll, "iw_bpd": iw_nll / (x[0].numel() * math.log(2))})
            self.iw_images.update(x.shape[0])
        prefix = self.eval_prefix
        self.log_dict({f"{prefix}/{k}": v for k, v in metrics.items()}, prog_bar=True, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if self.hparams.iw_samples and not self.trainer.sanity_checking:
            prefix = self.eval_prefix
            self._protocol[f"{prefix}/iw_nll"] = {
                "estimator": "importance-weighted, -log mean_k p(x, z_k) / q(z_k | x) (Burda et al. 2016)",
                "samples_per_image": self.hparams.iw_samples,
                "split": prefix,
                "images": int(self.iw_images.compute()),
                "units": "nats per image",
            }
        self.iw_images.reset()

    def protocol(self) -> dict[str, dict]:
        """How the last importance-weighted NLL was measured (estimator, k, split, image count); {} without one."""
        return {name: dict(entry) for name, entry in self._protocol.items()}


class BernoulliLogProb(torch.autograd.Function):
    """log p(x | logits) of a Bernoulli, elementwise: x * l - softplus(l), as -binary_cross_entropy_with_logits
    to float rounding, 3x faster forward and backward on CPU: torch's softplus and log1p have no vectorised
    CPU kernel (about 10x the time of log), so ``softplus(l) = max(l, 0) + log(1 + e^-|l|)`` takes log of a
    number in (1, 2], and the gradient ``x - sigmoid(l)`` is one pass."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(logits, x)
        log_one_plus = logits.abs().neg_().exp_().add_(1).log_()
        return torch.addcmul(log_one_plus.neg_(), x, logits).sub_(logits.clamp(min=0))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        logits, x = ctx.saved_tensors
        grad_logits = grad * (x - torch.sigmoid(logits)) if ctx.needs_input_grad[0] else None
        grad_x = grad * logits if ctx.needs_input_grad[1] else None
        return grad_logits, grad_x


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    """log P(x) for 8-bit data scaled to [-1, 1] under a Gaussian discretised into 256 bins (Ho et al. 2020)."""
    inv_std = torch.exp(-log_scale)
    centered = x - mean
    cdf_plus = _normal_cdf(inv_std * (centered + 1 / 255))
    cdf_minus = _normal_cdf(inv_std * (centered - 1 / 255))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1 - cdf_minus).clamp(min=1e-12))
    log_probs = torch.where(
        x < -0.999,
        log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, torch.log((cdf_plus - cdf_minus).clamp(min=1e-12))),
    )
    return log_probs


def _normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
