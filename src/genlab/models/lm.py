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

from genlab.interfaces import TextGenerator
from genlab.models import GenerativeModel, OptimizerFactory


class LanguageModel(GenerativeModel, TextGenerator):
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
        optimizer: OptimizerFactory | None = None,
    ):
        super().__init__(optimizer)
        self.save_hyperparameters(ignore=["net", "optimizer"])
        self.net = net
        if compile:
            self.net.compile()  # in place: parameter names and checkpoints stay the same
        self.val_nll = MeanMetric()
        self.bleu = SacreBLEUScore()  # sacrebleu's 13a tokenisation, corpus-level

    def nll(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean NLL over the target tokens (targets of -100, e.g. source and padding, are ignored)."""
        logits, _ = self.net(x)
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100)

    def generate(self, prompt: torch.Tensor, max_new_tokens: int, **options) -> torch.Tensor:
        return self.net.generate(prompt, max_new_tokens, **options)

    def training_loss(self, batch, step: int) -> tuple[torch.Tensor, dict]:
        loss = self.nll(*batch)
        return loss, {"loss": loss}

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        self.val_nll.update(self.nll(x, y), weight=(y != -100).sum())

    def on_validation_epoch_end(self) -> None:
        nll = self.val_nll.compute()
        self.val_nll.reset()
        dm, split = self.trainer.datamodule, self.eval_prefix  # the split evaluated: val or test
        metrics = {
            "loss": nll,
            "perplexity": nll.exp(),
            "bpc": nll / (math.log(2) * dm.chars_per_token(split)),
        }
        if self.hparams.bleu_samples:
            metrics["bleu"] = self.corpus_bleu(dm, split)
        self.log_dict({f"{split}/{k}": v for k, v in metrics.items()}, prog_bar=True)

    @torch.no_grad()
    def corpus_bleu(self, datamodule, split: str = "val") -> torch.Tensor:
        """Corpus BLEU (0-100) of greedy decodes of ``split``'s held-out prompts; each rank decodes a share."""
        n = self.hparams.bleu_samples
        pairs = datamodule.bleu_pairs(n if n > 0 else None, split)
        pairs = pairs[self.global_rank :: self.trainer.world_size]
        stop = datamodule.eos_id
        hypotheses, references = [], []
        for prompt, reference in pairs:
            out = self.generate(
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

    def param_groups(self) -> list[dict]:
        return self.net.param_groups(self.hparams.weight_decay)
