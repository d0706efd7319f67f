"""What the pipeline and callbacks use of a model, declared by the model's classes (never probed).

A family inherits the interfaces it implements; callbacks test ``isinstance`` against them.
"""

from typing import Any

import torch

from genlab.errors import ConfigError


class ImageGenerator:
    """Draws images in [-1, 1] of shape (num, C, H, W); ``conditions`` (e.g. ``labels``) for conditional models."""

    def sample(self, num: int, generator: torch.Generator | None = None, **conditions) -> torch.Tensor:
        raise NotImplementedError


class Reconstructor:
    """Maps images (and, for a conditional model, their labels) to reconstructions: sample grids show both."""

    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


class TextGenerator:
    """Continues token prompts (B, T) -> (B, T + new) tokens; ``temperature=0`` is greedy; ``beam_size`` > 1
    is beam search (deterministic: of the sampling options only ``stop_token`` applies)."""

    def generate(
        self,
        prompt: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        stop_token: int | None = None,
        beam_size: int = 1,
        length_penalty: float = 1.0,
    ) -> torch.Tensor:
        raise NotImplementedError


class ReportsProtocol:
    """A model or callback whose metrics need their measurement protocol beside them (split, sample counts,
    signatures such as sacreBLEU's): ``protocol()`` after an evaluation, written to ``metrics.json``."""

    def protocol(self) -> dict[str, Any]:
        raise NotImplementedError


def reject_conditions(model: object, conditions: dict) -> None:
    """Unconditional models refuse conditions in one line instead of ignoring them."""
    if conditions:
        raise ConfigError(
            f"{type(model).__name__} is unconditional: it takes no {', '.join(sorted(conditions))}."
        )
