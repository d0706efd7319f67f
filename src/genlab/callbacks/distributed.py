"""Per-rank seeding and a parameter-sync check for multi-process (DDP) runs."""

import json
import random
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch


class RankSeed(pl.Callback):
    """Seeds each rank with ``seed + global_rank`` once the processes exist.

    Every rank then draws different noise (GAN latents, diffusion timesteps, dropout) while the run
    as a whole stays reproducible. Model initialisation happens before, from ``seed`` alone (and DDP
    broadcasts rank 0's weights anyway); ``PL_GLOBAL_SEED`` is left alone so the distributed
    sampler's shuffling, which must agree across ranks, is unchanged.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        seed = self.seed + trainer.global_rank
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)


def fingerprint(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Per tensor: sum, sum of squares and a position-weighted sum (float64) -- equal iff (practically) equal."""
    rows = []
    for t in tensors:
        x = t.detach().double().flatten()
        weights = torch.arange(1, len(x) + 1, dtype=torch.float64, device=x.device) / len(x)
        rows.append(torch.stack([x.sum(), (x * x).sum(), (x * weights).sum()]))
    return torch.stack(rows)


class SyncCheck(pl.Callback):
    """Checks that all ranks hold identical parameters every ``every_n_batches`` batches and at the end.

    Raises naming the first parameter that differs. Rank 0 writes ``path`` (JSON): per rank, the
    parameter fingerprint, a fingerprint of its first training batch and of its RNG state at the
    start of training -- the data and noise each rank sees must differ, the parameters must not.
    """

    def __init__(self, path: str | None = None, every_n_batches: int = 0, atol: float = 0.0):
        self.path = Path(path) if path else None
        self.every_n_batches, self.atol = every_n_batches, atol
        self.record: dict[str, list] = {}

    def _gather(self, trainer: pl.Trainer, value: torch.Tensor) -> torch.Tensor:
        gathered = trainer.strategy.all_gather(value)
        return gathered if trainer.world_size > 1 else gathered.unsqueeze(0)

    def on_train_start(self, trainer, pl_module) -> None:
        rng = torch.random.get_rng_state().double()
        self.record["rng_state"] = self._gather(trainer, fingerprint([rng])).flatten(1).tolist()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if "first_batch" not in self.record:
            tensors = [
                t.to(pl_module.device) for t in (batch if isinstance(batch, (list, tuple)) else [batch])
            ]
            self.record["first_batch"] = self._gather(trainer, fingerprint(tensors)).flatten(1).tolist()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.every_n_batches and (batch_idx + 1) % self.every_n_batches == 0:
            self.check(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self.record["parameters"] = self.check(trainer, pl_module).flatten(1).tolist()
        self.record["global_step"] = trainer.global_step
        if self.path is not None and trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.record))

    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> torch.Tensor:
        names, params = zip(*pl_module.named_parameters())
        prints = self._gather(trainer, fingerprint(list(params)))
        diff = (prints - prints[0]).abs().amax(dim=(0, 2))
        if (bad := (diff > self.atol).nonzero()).numel():
            name = names[int(bad[0])]
            raise RuntimeError(
                f"Parameters differ across ranks at step {trainer.global_step}, first at '{name}' "
                f"(max fingerprint difference {float(diff[bad[0]]):.3g}): a rank updated on its own."
            )
        return prints
