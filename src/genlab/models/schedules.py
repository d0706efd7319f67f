"""Learning-rate schedules as LambdaLR multipliers, shared by the model families."""

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

SCHEDULES = ("constant", "linear", "cosine")


def make_schedule(optimizer: Optimizer, kind: str, total_steps: int, warmup_steps: int = 0) -> LambdaLR:
    """Linear warm-up for ``warmup_steps``, then constant, linear decay to 0 or cosine decay to 0."""
    if kind not in SCHEDULES:
        raise ValueError(f"Unknown lr schedule {kind!r}; choose one of {SCHEDULES}")
    total_steps = max(total_steps, 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        if kind == "linear":
            return 1.0 - progress
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return LambdaLR(optimizer, factor)
