"""Evaluation sampling under DDP: every example exactly once, so reduced metrics equal single-process ones."""

import torch.distributed as dist
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import Dataset, Sampler


def eval_sampler(dataset: Dataset) -> Sampler | None:
    """Rank r gets examples r, r + world, ... without the padding duplicates of ``DistributedSampler``.

    ``None`` in a single process (the loader then reads the dataset in order).
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return UnrepeatedDistributedSampler(dataset, shuffle=False)
    return None
