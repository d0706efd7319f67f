"""Autoregressive language model training: next-token cross-entropy, perplexity, bits per character.

Validation (and test) reduces the token-weighted mean NLL across batches and ranks (torchmetrics),
so ``val/perplexity`` = exp(mean token NLL) and ``val/bpc`` = bits per character of the text; under
``trainer.test`` the same metrics (``test/...``), bpc and BLEU are measured on the test split.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.text import SacreBLEUScore

from genlab.errors import ConfigError
from genlab.models import GenerativeModel, eval_prefix
from genlab.models.schedules import make_schedule


class LanguageModel(GenerativeModel):
    modality = "text"
    fallback_metric = "val/loss"

    def __init__(
        self,
        net: nn.Module,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.99),
        warmup_steps: int = 100,
        lr_schedule: str = "cosine",
        final_lr_ratio: float = 0.1,
        compile: bool = False,
        bleu_samples: int = 0,
        bleu_max_new_tokens: int = 64,
    ):
        super().__init__()
        if lr <= 0:
            raise ConfigError(f"model.lr must be positive, got {lr}")
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        if compile:
            self.net.compile()  # in place: parameter names and checkpoints stay the same
        self.val_nll = MeanMetric()
        self.bleu = SacreBLEUScore()  # sacrebleu's 13a tokenisation, corpus-level

    def nll(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean NLL over the target tokens (targets of -100, e.g. source and padding, are ignored)."""
        logits, _ = self.net(x)
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self.nll(*batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        self.val_nll.update(self.nll(x, y), weight=(y != -100).sum())

    def on_validation_epoch_end(self) -> None:
        nll = self.val_nll.compute()
        self.val_nll.reset()
        dm, split = self.trainer.datamodule, eval_prefix(self)  # the split evaluated: val or test
        chars_per_token = dm.chars_per_token(split) if hasattr(dm, "chars_per_token") else 1.0
        metrics = {
            "loss": nll,
            "perplexity": nll.exp(),
            "bpc": nll / (math.log(2) * chars_per_token),
        }
        if self.hparams.bleu_samples and hasattr(dm, "bleu_pairs"):
            metrics["bleu"] = self.corpus_bleu(dm, split)
        self.log_dict({f"{split}/{k}": v for k, v in metrics.items()}, prog_bar=True)

    test_step = validation_step
    on_test_epoch_end = on_validation_epoch_end

    @torch.no_grad()
    def corpus_bleu(self, datamodule, split: str = "val") -> torch.Tensor:
        """Corpus BLEU (0-100) of greedy decodes of ``split``'s held-out prompts; each rank decodes a share."""
        n = self.hparams.bleu_samples
        pairs = datamodule.bleu_pairs(n if n > 0 else None, split)
        pairs = pairs[self.global_rank :: self.trainer.world_size]
        stop = getattr(datamodule, "eos_id", None)
        hypotheses, references = [], []
        for prompt, reference in pairs:
            out = self.net.generate(
                torch.tensor([prompt], device=self.device),
                self.hparams.bleu_max_new_tokens,
                temperature=0,
                stop_token=stop,
            )[0, len(prompt) :].tolist()
            hypotheses.append(datamodule.tokenizer.decode(out[: out.index(stop)] if stop in out else out))
            references.append([reference])
        self.bleu.update(hypotheses, references)
        score = self.bleu.compute() * 100
        self.bleu.reset()
        return score

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.net.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": hp.weight_decay},  # matrices
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},  # biases, norms
        ]
        fused = self.device.type == "cuda"
        opt = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), fused=fused)
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = make_schedule(opt, hp.lr_schedule, total, hp.warmup_steps, hp.final_lr_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"}}
