"""GPT-2-family weights between Hugging Face ``transformers`` and genlab's :class:`~genlab.nets.gpt.GPT`.

The mapping nanoGPT's ``from_pretrained`` uses: GPT-2 keeps its linear layers as ``Conv1D`` (weights stored
(in, out), transposed here), its query/key/value in one ``c_attn``, and ties the output head to the token
embedding. ``name_or_path`` is a local directory (``save_pretrained``'s layout) or, online, a Hub name.
``transformers`` is an optional dependency (``pip install -e ".[hf]"``).
"""

from pathlib import Path
from typing import Any

import torch

from genlab.errors import ConfigError

# genlab name (per block i: "blocks.{i}.") -> transformers name ("transformer.h.{i}."), and whether Conv1D-transposed
BLOCK_KEYS = {
    "ln_1.weight": ("ln_1.weight", False),
    "ln_1.bias": ("ln_1.bias", False),
    "attn.qkv.weight": ("attn.c_attn.weight", True),
    "attn.qkv.bias": ("attn.c_attn.bias", False),
    "attn.proj.weight": ("attn.c_proj.weight", True),
    "attn.proj.bias": ("attn.c_proj.bias", False),
    "ln_2.weight": ("ln_2.weight", False),
    "ln_2.bias": ("ln_2.bias", False),
    "mlp.fc.weight": ("mlp.c_fc.weight", True),
    "mlp.fc.bias": ("mlp.c_fc.bias", False),
    "mlp.proj.weight": ("mlp.c_proj.weight", True),
    "mlp.proj.bias": ("mlp.c_proj.bias", False),
}
TOP_KEYS = {
    "tok_emb.weight": "transformer.wte.weight",
    "pos_emb.weight": "transformer.wpe.weight",
    "ln_f.weight": "transformer.ln_f.weight",
    "ln_f.bias": "transformer.ln_f.bias",
}
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


def _transformers():
    try:
        import transformers
    except ImportError as e:
        raise ConfigError("model.init_from needs Hugging Face transformers: pip install -e '.[hf]'") from e
    return transformers


def _load(loader, name_or_path: str, what: str) -> Any:
    """``loader(name_or_path)``, with a one-line message when it is neither a local folder nor reachable."""
    try:
        return loader(name_or_path)
    except OSError as e:
        where = "the folder exists but" if Path(name_or_path).is_dir() else "it is no local folder and"
        raise ConfigError(
            f"model.init_from={name_or_path!r}: could not read its {what} ({where} the Hugging Face Hub is "
            "unreachable or has no such model). Offline, give a folder written by save_pretrained."
        ) from e


def pretrained_shape(name_or_path: str) -> dict[str, Any]:
    """The :class:`GPT` keyword arguments of a GPT-2-family checkpoint's config."""
    config = _load(_transformers().AutoConfig.from_pretrained, name_or_path, "config")
    if config.model_type != "gpt2":
        raise ConfigError(
            f"model.init_from={name_or_path!r} is a {config.model_type!r} model; genlab's GPT loads GPT-2-family weights."
        )
    return {
        "vocab_size": config.vocab_size,
        "block_size": config.n_positions,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_embd": config.n_embd,
        "bias": True,
        "activation": "gelu_tanh" if config.activation_function in TANH_GELUS else "gelu",
    }


def from_gpt2(state: dict[str, torch.Tensor], n_layer: int) -> dict[str, torch.Tensor]:
    """A ``GPT2LMHeadModel`` state dict in genlab's GPT names and layout."""
    out = {ours: state[theirs] for ours, theirs in TOP_KEYS.items()}
    for i in range(n_layer):
        for ours, (theirs, transposed) in BLOCK_KEYS.items():
            tensor = state[f"transformer.h.{i}.{theirs}"]
            out[f"blocks.{i}.{ours}"] = tensor.t() if transposed else tensor
    out["lm_head.weight"] = out["tok_emb.weight"]  # tied
    return out


def to_gpt2(state: dict[str, torch.Tensor], n_layer: int) -> dict[str, torch.Tensor]:
    """genlab's GPT state dict in ``GPT2LMHeadModel``'s names and layout (the inverse of :func:`from_gpt2`)."""
    out = {theirs: state[ours] for ours, theirs in TOP_KEYS.items()}
    for i in range(n_layer):
        for ours, (theirs, transposed) in BLOCK_KEYS.items():
            tensor = state[f"blocks.{i}.{ours}"]
            out[f"transformer.h.{i}.{theirs}"] = (tensor.t() if transposed else tensor).contiguous()
    out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


@torch.no_grad()
def load_pretrained(net: torch.nn.Module, name_or_path: str) -> None:
    """Copies a GPT-2-family checkpoint's weights into ``net`` (built with :func:`pretrained_shape`)."""
    hf = _load(_transformers().GPT2LMHeadModel.from_pretrained, name_or_path, "weights")
    state = from_gpt2(hf.state_dict(), len(net.blocks))
    net.load_state_dict(state, strict=True)
