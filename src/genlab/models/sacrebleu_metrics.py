"""sacreBLEU's corpus metrics (BLEU, chrF) as torchmetrics metrics: the same numbers as ``sacrebleu.corpus_bleu``
/ ``sacrebleu.corpus_chrf``, reducible across DDP ranks.

A corpus score is a function of statistics summed over sentences (n-gram matches and totals, lengths), so
each rank keeps the sum of sacreBLEU's own per-sentence statistics of the hypotheses it decoded, the ranks
add them up, and sacreBLEU's own code turns the sum into the score. sacreBLEU itself does the tokenisation,
the n-gram counting and the smoothing: no re-implementation to drift from it. (torchmetrics' ``CHRFScore``
averages the per-order F-scores, which sacreBLEU does only with ``eps_smoothing=True``, and counts word
bigrams by default, i.e. chrF++; its ``SacreBLEUScore(smooth=False)`` is 0 where sacreBLEU's default
``exp`` smoothing is not.)
"""

from typing import Any

import torch
from torchmetrics import Metric


class SacreMetric(Metric):
    """A sacreBLEU metric object (``sacrebleu.metrics.BLEU()``, ``CHRF()``, with any settings) as a Metric:
    ``update(hypotheses, references)`` with one reference per hypothesis, ``compute()`` on sacreBLEU's 0-100
    scale, :meth:`signature` its reproducibility signature (``nrefs:1|case:mixed|...|version:2.x``)."""

    full_state_update = False

    def __init__(self, metric: Any, **kwargs):
        super().__init__(**kwargs)
        self.metric = metric
        size = len(metric._extract_corpus_statistics(["a b"], [["a b"]])[0])  # also sets its nrefs: 1
        self.add_state("stats", torch.zeros(size, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("sentences", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, hypotheses: list[str], references: list[str]) -> None:
        if len(hypotheses) != len(references):
            raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
        if not hypotheses:  # a rank with no sentences adds nothing
            return
        stats = self.metric._extract_corpus_statistics(hypotheses, [references])
        self.stats += torch.tensor(stats, dtype=torch.long).sum(0).to(self.stats.device)
        self.sentences += len(hypotheses)

    def compute(self) -> torch.Tensor:
        score = self.metric._compute_score_from_stats(self.stats.tolist()).score
        return torch.tensor(score, dtype=torch.float64, device=self.stats.device)  # float64: exact in logs

    def signature(self) -> str:
        return str(self.metric.get_signature())


def sacre_bleu() -> SacreMetric:
    """Corpus BLEU with sacreBLEU's defaults: 13a tokenisation, mixed case, exp smoothing, 4-grams."""
    from sacrebleu.metrics import BLEU

    return SacreMetric(BLEU())


def sacre_chrf() -> SacreMetric:
    """chrF with sacreBLEU's defaults: character 6-grams, no word n-grams (chrF, not chrF++), beta 2,
    whitespace excluded, sacreBLEU's effective-order averaging."""
    from sacrebleu.metrics import CHRF

    return SacreMetric(CHRF(char_order=6, word_order=0, beta=2))
