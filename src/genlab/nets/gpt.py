"""A decoder-only Transformer (GPT), in the spirit of nanoGPT's model.py.

Pre-LayerNorm blocks, causal self-attention through ``scaled_dot_product_attention``, learned
position embeddings, weight tying, and an optional key/value cache for fast generation.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import ConfigError

KVCache = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values (B, heads, T, head_dim)


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        if n_embd % n_head:
            raise ConfigError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        self.n_head, self.dropout = n_head, dropout
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        b, t, c = x.shape
        q, k, v = (
            z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in self.qkv(x).split(c, dim=2)
        )
        if cache is None:
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
            )
        else:  # new positions follow the cached ones: each query sees the cache and the new keys up to itself
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            mask = torch.ones(t, k.shape[2], dtype=torch.bool, device=x.device).tril(k.shape[2] - t)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(b, t, c))), (k, v)


ACTIVATIONS = {"gelu": "none", "gelu_tanh": "tanh"}  # exact GELU | GPT-2's tanh approximation ("gelu_new")


class MLP(nn.Module):
    def __init__(self, n_embd: int, dropout: float, bias: bool, activation: str = "gelu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"model.net.activation={activation!r} is unknown; choose one of {list(ACTIVATIONS)}"
            )
        self.approximate = ACTIVATIONS[activation]
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x), approximate=self.approximate)))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool, activation: str = "gelu"):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias, activation)

    def forward(self, x: torch.Tensor, cache=None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        h, new_cache = self.attn(self.ln_1(x), cache)
        x = x + h
        return x + self.mlp(self.ln_2(x)), new_cache


class GPT(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        block_size: int = 256,
        n_layer: int = 6,
        n_head: int = 6,
        n_embd: int = 384,
        dropout: float = 0.2,
        bias: bool = False,
        activation: str = "gelu",
    ):
        super().__init__()
        self.vocab_size, self.block_size = vocab_size, block_size
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, bias, activation) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # scaled init of residual projections (GPT-2)
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.pos_emb.weight.numel() if non_embedding else n

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """Logits (B, T, vocab) for token ids (B, T), continuing after ``cache`` if given."""
        start = cache[0][0].shape[2] if cache else 0
        if start + idx.shape[1] > self.block_size:
            raise ConfigError(f"sequence length {start + idx.shape[1]} exceeds block_size {self.block_size}")
        pos = torch.arange(start, start + idx.shape[1], device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        new_cache = []
        for i, block in enumerate(self.blocks):
            x, layer_cache = block(x, cache[i] if cache else None)
            new_cache.append(layer_cache)
        return self.lm_head(self.ln_f(x)), new_cache

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups as nanoGPT's: weight decay on matrices (linear and embedding weights), none on
        biases and LayerNorm parameters."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]

    def _next_logits(
        self, idx: torch.Tensor, cache: KVCache | None, use_cache: bool = True
    ) -> tuple[torch.Tensor, KVCache | None]:
        """Logits (B, vocab) of the token after ``idx`` (B, T) and the cache to continue from: one new
        position on top of ``cache`` while the window has room, else the last ``block_size`` tokens anew."""
        if use_cache and cache is not None and cache[0][0].shape[2] < self.block_size:
            logits, cache = self(idx[:, -1:], cache)
        else:  # no cache yet, or the window is full: (re)encode the last block_size tokens
            logits, cache = self(idx[:, -self.block_size :])
            cache = cache if use_cache and idx.shape[1] < self.block_size else None
        return logits[:, -1, :], cache

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
        stop_token: int | None = None,
    ) -> torch.Tensor:
        """Append up to ``max_new_tokens`` sampled tokens to ``idx`` (B, T); temperature 0 is greedy.

        Stops early once every row has produced ``stop_token`` (among the new tokens, not the prompt's).
        """
        cache: KVCache | None = None
        start = idx.shape[1]
        for _ in range(max_new_tokens):
            logits, cache = self._next_logits(idx, cache, use_cache)
            next_token = sample_next(logits, temperature, top_k, top_p, generator)
            idx = torch.cat([idx, next_token], dim=1)
            if stop_token is not None and (idx[:, start:] == stop_token).any(dim=1).all():
                break
        return idx

    @torch.no_grad()
    def beam_search(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        beam_size: int,
        length_penalty: float = 1.0,
        stop_token: int | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """The highest-scoring continuation of each prompt of ``idx`` (B, T) found by beam search.

        The ``beam_size`` beams of every prompt are rows of one batch (B * beam_size rows) sharing the KV
        cache, which is reordered as beams are kept. At each step every beam is extended by every token;
        of the best ``2 * beam_size`` extensions per prompt, those ending in ``stop_token`` that rank among
        the first ``beam_size`` become finished hypotheses, and the best ``beam_size`` others stay alive
        (fairseq's ``SequenceGenerator``). A prompt is done once ``beam_size`` hypotheses have finished;
        the search stops when every prompt is done or after ``max_new_tokens`` steps, when the beams
        still alive are finished as they are.

        Hypotheses are ranked by ``sum(log p(y_i | y_<i, prompt)) / |y| ** length_penalty``, where ``|y|``
        counts the generated tokens including ``stop_token``: fairseq's ``--lenpen`` normalisation
        (``length_penalty=1``: mean log-probability per token; ``0``: the plain sum of log-probabilities,
        favouring short outputs). It is not GNMT's ``((5 + |y|) / 6) ** alpha`` (Wu et al. 2016).
        Alive beams are ranked by their unnormalised sum. ``beam_size=1`` is greedy decoding.

        Returns (B, T + L): each prompt followed by its best hypothesis (its ``stop_token`` included),
        rows shorter than the longest padded with ``stop_token``.
        """
        if beam_size < 1:
            raise ConfigError(f"beam_size must be at least 1, got {beam_size}")
        batch, k, vocab = idx.shape[0], beam_size, self.vocab_size
        if max_new_tokens <= 0:
            return idx
        # every prompt's k beams start as copies; all but the first at -inf, so step 1 picks k distinct tokens
        seqs = idx.repeat_interleave(k, dim=0)  # (B*k, T), prompt b's beams in rows b*k .. b*k+k-1
        scores = torch.full((batch, k), float("-inf"), device=idx.device)
        scores[:, 0] = 0.0
        logits, cache = self._next_logits(idx, None, use_cache)  # the prompts encoded once, not k times
        logits = logits.repeat_interleave(k, dim=0)
        cache = (
            [(key.repeat_interleave(k, 0), v.repeat_interleave(k, 0)) for key, v in cache] if cache else None
        )
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
        offset = torch.arange(batch, device=idx.device)[:, None] * k  # row of each prompt's first beam
        for step in range(max_new_tokens):
            if step:
                logits, cache = self._next_logits(seqs, cache, use_cache)
            logp = F.log_softmax(logits.float(), dim=-1)  # (B*k, vocab)
            candidates = (scores.view(-1, 1) + logp).view(batch, k * vocab)
            top_scores, top = candidates.topk(min(2 * k, k * vocab), dim=1)  # (B, 2k), best first
            beams, tokens = top // vocab, top % vocab
            length = step + 1  # generated tokens, the stop token included
            ends = (
                tokens == stop_token if stop_token is not None else torch.zeros_like(tokens, dtype=torch.bool)
            )
            for b in range(batch):
                if len(finished[b]) >= k:  # done: its rows still run (batched) but are ignored
                    continue
                for rank in ends[b, :k].nonzero().flatten().tolist():
                    if len(finished[b]) < k and top_scores[b, rank] > float("-inf"):
                        row = int(offset[b, 0] + beams[b, rank])
                        hypothesis = [*seqs[row, idx.shape[1] :].tolist(), stop_token]
                        finished[b].append((float(top_scores[b, rank]) / length**length_penalty, hypothesis))
            if all(len(f) >= k for f in finished):
                break
            # the best k extensions that do not end: a stable sort keeps them in score order
            alive = (~ends).float().argsort(dim=1, descending=True, stable=True)[:, :k]
            scores = top_scores.gather(1, alive)
            rows = (offset + beams.gather(1, alive)).flatten()
            seqs = torch.cat([seqs[rows], tokens.gather(1, alive).view(-1, 1)], dim=1)
            if cache is not None:
                cache = [(key[rows], v[rows]) for key, v in cache]
            if step + 1 < max_new_tokens:
                continue
            for b in range(batch):  # out of steps: the alive beams finish as they are
                if len(finished[b]) < k:
                    for beam in range(k):
                        if scores[b, beam] > float("-inf"):
                            hypothesis = seqs[b * k + beam, idx.shape[1] :].tolist()
                            finished[b].append((float(scores[b, beam]) / length**length_penalty, hypothesis))
        best = [max(f, key=lambda h: h[0])[1] for f in finished]
        width = max(len(h) for h in best)
        pad = stop_token if stop_token is not None else 0
        out = torch.full((batch, width), pad, dtype=idx.dtype, device=idx.device)
        for b, hypothesis in enumerate(best):
            out[b, : len(hypothesis)] = torch.tensor(hypothesis, dtype=idx.dtype)
        return torch.cat([idx, out], dim=1)


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token id per row from (B, vocab) logits, with temperature, top-k and nucleus (top-p) filtering."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) > top_p  # keep the smallest set reaching top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    probs = logits.softmax(-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).to(logits.device)
