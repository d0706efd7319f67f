"""Generated text at each validation: a text file in the run dir, a W&B table, a TensorBoard text."""

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only


class TextSamples(pl.Callback):
    """Continues ``num_prompts`` held-out prompts (``datamodule.bleu_pairs``) by up to ``max_new_tokens``
    with the model's ``generate`` (a :class:`~genlab.interfaces.TextGenerator`)."""

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

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.generate(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.generate(trainer, pl_module, "test")

    @rank_zero_only
    def generate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        """Continuations of ``split``'s held-out prompts, written next to their references."""
        dm = trainer.datamodule
        if trainer.sanity_checking:
            return
        generator = torch.Generator().manual_seed(self.seed)
        rows = []
        for prompt, reference in dm.bleu_pairs(self.num_prompts, split):
            prompt = prompt[-self.prompt_tokens :]
            out = pl_module.generate(
                torch.tensor([prompt], device=pl_module.device),
                self.max_new_tokens,
                temperature=self.temperature,
                top_k=self.top_k,
                top_p=self.top_p,
                generator=generator,
                stop_token=dm.eos_id,
            )
            rows.append(
                [dm.tokenizer.decode(prompt), dm.tokenizer.decode(out[0, len(prompt) :].tolist()), reference]
            )
        self.dirpath.mkdir(parents=True, exist_ok=True)
        text = "\n\n".join(f"=== prompt: {p!r}\n--- generated:\n{g}\n--- reference:\n{r}" for p, g, r in rows)
        name = f"text_{'test_' if split == 'test' else ''}epoch_{trainer.current_epoch:03d}_step_{trainer.global_step}"
        (self.dirpath / f"{name}.txt").write_text(text)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_text(
                    key=f"{split}/generated",
                    columns=["prompt", "generated", "reference"],
                    data=rows,
                    step=trainer.global_step,
                )
            elif isinstance(logger, MLFlowLogger):
                logger.experiment.log_text(logger.run_id, text, f"{split}/generated/{name}.txt")
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text(
                    f"{split}/generated", text.replace("\n", "  \n"), trainer.global_step
                )
