"""A run exported as a self-contained folder: weights (safetensors), resolved config, tokenizer, model card.

``sample.py`` and ``eval.py`` accept the folder as ``ckpt_path``. A GPT whose layout is GPT-2's (biases) also
gets ``hf/``, a folder ``transformers.GPT2LMHeadModel.from_pretrained`` loads. ``hub_repo`` uploads the folder
with ``huggingface_hub`` (online only).
"""

import json
import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torchvision.utils import save_image

from genlab.checkpoints import CONFIG_KEY, STALE_NETWORK, load_weights
from genlab.errors import CheckpointError, ConfigError
from genlab.interfaces import ImageGenerator, TextGenerator

log = logging.getLogger(__name__)
MARKER = "genlab.json"  # what makes a folder an export: format, training progress, datamodule state
WEIGHTS = "model.safetensors"


def is_export(path: str | Path) -> bool:
    return (Path(path) / MARKER).is_file()


def load_export(folder: str | Path) -> dict[str, Any]:
    """An exported folder as the checkpoint dict ``load_run`` expects (state_dict, config, datamodule state)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = json.loads((folder / MARKER).read_text())
    try:
        state = load_file(folder / WEIGHTS)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(
            f"{folder / WEIGHTS} is truncated or corrupt ({str(err).splitlines()[0]}); export the run again."
        ) from None
    config = OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"), resolve=True)
    return {"state_dict": state, CONFIG_KEY: config, **meta["checkpoint"]}


def export_run(cfg: DictConfig) -> Path:
    """Writes ``cfg.out`` (default: ``<run>/export``) from ``cfg.ckpt_path``; uploads it to ``cfg.hub_repo``."""
    from safetensors.torch import save_file

    from genlab.pipeline import load_run

    ckpt_path, checkpoint, run_cfg = load_run(cfg.ckpt_path)
    run_dir = Path(ckpt_path).parent.parent
    out = Path(cfg.out) if cfg.get("out") else run_dir / "export"
    out.mkdir(parents=True, exist_ok=True)
    model = instantiate(run_cfg.model, _convert_="all")
    load_weights(ckpt_path, model, checkpoint, run_cfg, STALE_NETWORK)
    state = {
        k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
    }  # tied weights: copies
    save_file(state, out / WEIGHTS)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(run_cfg))
    data_key = get_class(run_cfg.data._target_).__qualname__
    kept = {k: checkpoint[k] for k in ("epoch", "global_step", data_key) if k in checkpoint}
    (out / MARKER).write_text(json.dumps({"format": 1, "checkpoint": kept}, indent=2))
    if tokenizer := (checkpoint.get(data_key) or {}).get("tokenizer"):
        (out / "tokenizer.json").write_text(tokenizer)
    preview = write_preview(model, checkpoint, run_cfg, out)
    metrics = (
        json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    )
    (out / "README.md").write_text(model_card(run_cfg, checkpoint, metrics, preview))
    if type(model).__name__ == "LanguageModel" and run_cfg.model.net.get("bias"):
        write_transformers_gpt2(model, run_cfg, out / "hf")
    log.info("Exported %s to %s", ckpt_path, out)
    if cfg.get("hub_repo"):
        upload(out, cfg.hub_repo)
    return out


def write_preview(model, checkpoint: dict, run_cfg: DictConfig, out: Path) -> str:
    """A sample grid (images) or sample text for the model card; its markdown."""
    generator = torch.Generator().manual_seed(0)
    model.eval()
    if isinstance(model, ImageGenerator):
        with torch.no_grad():
            images = model.sample(16, generator)
        save_image((images.float() + 1) / 2, out / "samples.png", nrow=4)
        return "![samples](samples.png)"
    if isinstance(model, TextGenerator):
        tokenizer = get_class(run_cfg.data._target_).tokenizer_from_checkpoint(checkpoint)
        start = torch.zeros(1, 1, dtype=torch.long)
        with torch.no_grad():
            ids = model.generate(start, 64, temperature=0.8, top_k=50, generator=generator)
        return "```text\n" + tokenizer.decode(ids[0].tolist()) + "\n```"
    return ""


def model_card(run_cfg: DictConfig, checkpoint: dict, metrics: dict, preview: str) -> str:
    protocol = metrics.get("protocol", {})
    rows = "\n".join(
        f"| `{k}` | {v:.6g} |" for k, v in sorted(metrics.items()) if isinstance(v, (int, float))
    )
    family = run_cfg.model._target_.rsplit(".", 1)[-1]
    data = run_cfg.data._target_.rsplit(".", 1)[-1]
    return f"""---
library_name: genlab
tags: [genlab, {family.lower()}, generative]
---
# {family} trained with genlab on {data}

Trained {checkpoint.get("epoch", 0) + 1} epoch(s), {checkpoint.get("global_step", 0)} optimizer steps.
Weights: `{WEIGHTS}`; the resolved training config: `config.yaml`. Sample or evaluate it with genlab:

```bash
python src/sample.py ckpt_path=<this folder>
python src/eval.py ckpt_path=<this folder>
```

## Metrics (the training run's last evaluation)

| metric | value |
|---|---|
{rows}

Protocol (split, sample counts, signatures): `{json.dumps(protocol)}`

## Samples

{preview}
"""


def write_transformers_gpt2(model, run_cfg: DictConfig, folder: Path) -> None:
    """The GPT as a ``transformers`` GPT-2 (config.json + weights): biases and GPT-2's layout are required."""
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        log.warning("transformers is not installed: no hf/ folder (pip install -e '.[hf]')")
        return
    from genlab.nets.hf_gpt2 import to_gpt2

    net = run_cfg.model.net
    config = GPT2Config(
        vocab_size=net.vocab_size,
        n_positions=net.block_size,
        n_embd=net.n_embd,
        n_layer=net.n_layer,
        n_head=net.n_head,
        activation_function="gelu_new" if net.get("activation") == "gelu_tanh" else "gelu",
        bos_token_id=None,
        eos_token_id=None,
    )
    hf = GPT2LMHeadModel(config)
    result = hf.load_state_dict(to_gpt2(model.net.state_dict(), net.n_layer), strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(("attn.bias", "attn.masked_bias"))]
    if missing or result.unexpected_keys:  # masks are buffers; every parameter must be genlab's
        raise CheckpointError(
            f"GPT-2 layout mismatch: missing {missing}, unexpected {result.unexpected_keys}"
        )
    hf.save_pretrained(folder)


def upload(folder: Path, repo: str) -> None:
    """Uploads ``folder`` to the Hub repo ``repo`` (created if missing); one line when offline."""
    from huggingface_hub import HfApi

    try:
        api = HfApi()
        api.create_repo(repo, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo)
    except Exception as err:  # network, auth: huggingface_hub raises many types
        raise ConfigError(
            f"hub_repo={repo}: the upload failed ({type(err).__name__}); it needs the network and "
            f"`huggingface-cli login`. The export is complete in {folder}."
        ) from None
