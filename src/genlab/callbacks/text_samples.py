"""Generated text at each validation: a text file in the run dir, a W&B table, a TensorBoard text."""

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only


class TextSamples(pl.Callback):
    """Continues ``num_prompts`` held-out prompts (the start of validation windows) by ``max_new_tokens``."""

    def __init__(
        self,
        dirpath: str,
        num_prompts: int = 4,
        prompt_tokens: int = 16,
        max_new_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int | None = 200,
        top_p: float | None = None,
        seed: int = 0,
    ):
        self.dirpath = Path(dirpath)
        self.num_prompts, self.prompt_tokens, self.max_new_tokens = num_prompts, prompt_tokens, max_new_tokens
        self.temperature, self.top_k, self.top_p, self.seed = temperature, top_k, top_p, seed

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        if trainer.sanity_checking or getattr(dm, "tokenizer", None) is None:
            return
        windows = dm.val_tokens[: self.num_prompts * dm.block_size].long().view(-1, dm.block_size)
        prompts = windows[:, : self.prompt_tokens].to(pl_module.device)
        out = pl_module.net.generate(
            prompts,
            self.max_new_tokens,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            generator=torch.Generator().manual_seed(self.seed),
        )
        rows = [
            (dm.tokenizer.decode(p.tolist()), dm.tokenizer.decode(o[self.prompt_tokens :].tolist()))
            for p, o in zip(prompts, out)
        ]
        self.dirpath.mkdir(parents=True, exist_ok=True)
        text = "\n\n".join(f"=== prompt: {p!r}\n{p}{c}" for p, c in rows)
        (self.dirpath / f"text_epoch_{trainer.current_epoch:03d}_step_{trainer.global_step}.txt").write_text(
            text
        )
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_text(
                    key="val/generated", columns=["prompt", "continuation"], data=[list(r) for r in rows]
                )
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("val/generated", text.replace("\n", "  \n"), trainer.global_step)
