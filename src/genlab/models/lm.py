"""Autoregressive language model training: next-token cross-entropy, perplexity, bits per character.

Validation (and test) reduces the token-weighted mean NLL across batches and ranks (torchmetrics),
so ``val/perplexity`` = exp(mean token NLL) and ``val/bpc`` = bits per character of the text; under
``trainer.test`` the same metrics (``test/...``), bpc and BLEU are measured on the test split.

With ``bleu_samples``, decodes of held-out prompts (greedy, or beam search with ``beam_size`` > 1) are
scored with sacreBLEU's corpus BLEU and chrF (``val/bleu``, ``val/chrf``), and :meth:`protocol` says how:
sacreBLEU signatures, split, sentence count and decoding, written to ``metrics.json``.
"""

import math
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, open_dict
from torch import nn
from torchmetrics import MeanMetric

from genlab.errors import ConfigError
from genlab.interfaces import ReportsProtocol, TextGenerator
from genlab.models import GenerativeModel, OptimizerFactory, log_global
from genlab.models.sacrebleu_metrics import sacre_bleu, sacre_chrf
from genlab.nets.hf_gpt2 import load_pretrained, pretrained_shape


class LanguageModel(GenerativeModel, TextGenerator, ReportsProtocol):
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
        beam_size: int = 1,
        length_penalty: float = 1.0,
        optimizer: OptimizerFactory | None = None,
        init_from: str | None = None,
    ):
        super().__init__(optimizer)
        if beam_size < 1:
            raise ConfigError(f"model.beam_size must be at least 1 (1: greedy decoding), got {beam_size}")
        self.save_hyperparameters(ignore=["net", "optimizer"])
        self.net = net
        if compile:
            self.net.compile()  # in place: parameter names and checkpoints stay the same
        self.val_nll = MeanMetric()
        self.bleu = sacre_bleu()  # sacreBLEU's corpus BLEU (13a, exp smoothing), summed statistics
        self.chrf = sacre_chrf()  # sacreBLEU's chrF (char 6-grams, beta 2)
        self._protocol: dict[str, Any] = {}  # how the last BLEU / chrF were measured

    @classmethod
    def configure_run(cls, cfg: DictConfig) -> None:
        """``model.init_from``: the network takes the pretrained model's shape and the data its tokenizer."""
        name = cfg.model.get("init_from")
        if not name:
            return
        if "tokenizer" not in cfg.data:
            raise ConfigError(
                f"model.init_from needs data with a `tokenizer` option (e.g. data=text_file); "
                f"{cfg.data._target_.rsplit('.', 1)[-1]} trains its own."
            )
        shape = pretrained_shape(name)
        if cfg.data.block_size > shape["block_size"]:
            raise ConfigError(
                f"data.block_size={cfg.data.block_size} exceeds the {shape['block_size']} positions of "
                f"model.init_from={name}: set data.block_size<={shape['block_size']}."
            )
        with open_dict(cfg):
            cfg.model.net.update(shape)
            cfg.data.tokenizer = name
            cfg.data.vocab_size = None

    def setup(self, stage: str) -> None:
        # Before Lightning restores a checkpoint: a resumed run continues from its own weights.
        if stage == "fit" and self.hparams.init_from:
            load_pretrained(self.net, self.hparams.init_from)

    def nll(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean NLL over the target tokens (targets of -100, e.g. source and padding, are ignored)."""
        logits, _ = self.net(x)
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100)

    def generate(
        self,
        prompt: torch.Tensor,
        max_new_tokens: int,
        beam_size: int = 1,
        length_penalty: float = 1.0,
        **options,
    ) -> torch.Tensor:
        """Sampled (or, at ``temperature=0``, greedy) continuations; with ``beam_size`` > 1 the best beam of
        :meth:`GPT.beam_search <genlab.nets.gpt.GPT.beam_search>`, which is deterministic: of ``options``
        it takes only ``stop_token``."""
        if beam_size > 1:
            return self.net.beam_search(
                prompt, max_new_tokens, beam_size, length_penalty, stop_token=options.get("stop_token")
            )
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
            metrics.update(self.corpus_bleu(dm, split))
        log_global(self, {f"{split}/{k}": v for k, v in metrics.items()}, prog_bar=True)

    @property
    def decoding(self) -> str:
        """How BLEU's outputs are decoded, as :meth:`protocol` reports it."""
        if self.hparams.beam_size == 1:
            return "greedy"
        return f"beam {self.hparams.beam_size}, length_penalty {float(self.hparams.length_penalty)}"

    @torch.no_grad()
    def translate(self, prompts: list[list[int]], stop_token: int | None) -> list[list[int]]:
        """The decoded continuation of each prompt (greedy or beam, as configured), cut before ``stop_token``."""
        outputs = []
        for prompt in prompts:
            out = self.generate(
                torch.tensor([prompt], device=self.device),
                self.hparams.bleu_max_new_tokens,
                beam_size=self.hparams.beam_size,
                length_penalty=self.hparams.length_penalty,
                temperature=0,
                stop_token=stop_token,
            )[0, len(prompt) :].tolist()
            outputs.append(out[: out.index(stop_token)] if stop_token in out else out)
        return outputs

    @torch.no_grad()
    def corpus_bleu(self, datamodule, split: str = "val") -> dict[str, torch.Tensor]:
        """sacreBLEU's corpus BLEU and chrF (0-100) of the decodes of ``split``'s held-out prompts
        (``bleu_samples`` of them, -1: all); each rank decodes a share, the statistics are summed."""
        n = self.hparams.bleu_samples
        pairs = datamodule.bleu_pairs(n if n > 0 else None, split)
        total = len(pairs)
        pairs = pairs[self.global_rank :: self.trainer.world_size]
        outputs = self.translate([prompt for prompt, _ in pairs], datamodule.eos_id)
        hypotheses = [datamodule.tokenizer.decode(out) for out in outputs]
        references = [reference for _, reference in pairs]
        scores = {}
        for name, metric in (("bleu", self.bleu), ("chrf", self.chrf)):
            metric.update(hypotheses, references)
            scores[name] = metric.compute()
            metric.reset()
            if self.trainer.sanity_checking:  # Lightning drops these metrics: no protocol for them
                continue
            self._protocol[name] = {
                "signature": metric.signature(),
                "split": split,
                "sentences": total,
                "decoding": self.decoding,
                "max_new_tokens": self.hparams.bleu_max_new_tokens,
            }
        return scores

    def protocol(self) -> dict[str, Any]:
        """How the last BLEU and chrF were measured (sacreBLEU signature, split, sentences, decoding); {}
        when none was computed."""
        return {name: dict(entry) for name, entry in self._protocol.items()}

    def param_groups(self) -> list[dict]:
        return self.net.param_groups(self.hparams.weight_decay)
