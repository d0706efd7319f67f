"""Learning-rate schedules as LambdaLR multipliers, shared by the model families."""

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from genlab.errors import ConfigError

SCHEDULES = ("constant", "linear", "cosine")


def make_schedule(
    optimizer: Optimizer, kind: str, total_steps: int, warmup_steps: int = 0, final_ratio: float = 0.0
) -> LambdaLR:
    """Linear warm-up for ``warmup_steps``, then constant, or linear / cosine decay to ``final_ratio`` x lr."""
    if kind not in SCHEDULES:
        raise ConfigError(f"Unknown lr schedule {kind!r}; choose one of {SCHEDULES}")
    total_steps = max(total_steps, 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        if kind == "linear":
            return final_ratio + (1.0 - final_ratio) * (1.0 - progress)
        if kind == "cosine":
            return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return LambdaLR(optimizer, factor)
