"""Class conditioning shared by the families: labels read from batches, labels drawn or checked for sampling.

A family with a ``num_classes`` hparam (filled from labelled data, ``data.labels=true``; ``None`` keeps it
unconditional) inherits :class:`ClassConditional`; callbacks test ``isinstance`` and :attr:`conditional`.
"""

from typing import Any, ClassVar

import torch

from genlab.errors import ConfigError
from genlab.interfaces import reject_conditions


class ClassConditional:
    """Mixin of a :class:`~genlab.models.GenerativeModel` that may be class-conditional."""

    sample_options: ClassVar[tuple[str, ...]] = ("labels", "per_class")  # sample.py's options

    @property
    def num_classes(self) -> int | None:
        return self.hparams.get("num_classes")

    @property
    def conditional(self) -> bool:
        return self.num_classes is not None

    def batch_labels(self, batch: Any) -> torch.Tensor | None:
        """The batch's class labels for a conditional model (None for an unconditional one)."""
        if not self.conditional:
            return None
        if not isinstance(batch, (list, tuple)) or len(batch) < 2:
            raise ConfigError("model.num_classes is set but the data yields no labels: set data.labels=true.")
        return batch[1]

    def sample_labels(
        self, num: int, labels: torch.Tensor | list[int] | None, generator: torch.Generator | None = None
    ) -> torch.Tensor | None:
        """``num`` class labels on the model's device: ``labels`` checked, or drawn uniformly from
        ``generator``; None for an unconditional model (which refuses labels in one line)."""
        if not self.conditional:
            if labels is not None:
                reject_conditions(self, {"labels": labels})
            return None
        if labels is None:
            labels = torch.randint(self.num_classes, (num,), generator=generator)
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.shape != (num,) or labels.min() < 0 or labels.max() >= self.num_classes:
            raise ConfigError(
                f"labels must be {num} classes in [0, {self.num_classes}), got {labels.tolist()}"
            )
        return labels.to(self.device)


def is_conditional(model: object) -> bool:
    """Whether ``model`` is a class-conditional family trained on labels (callbacks draw samples per class)."""
    return isinstance(model, ClassConditional) and model.conditional


def balanced_labels(start: int, stop: int, num_classes: int) -> torch.Tensor:
    """Labels of samples ``start .. stop - 1`` of an evaluation: the classes in turn (equal counts)."""
    return torch.arange(start, stop) % num_classes


def check_num_classes(num_classes: int | None, **nets: Any) -> None:
    """The networks of a family are conditional on the same classes as the model (config interpolations)."""
    for name, net in nets.items():
        if getattr(net, "num_classes", None) != num_classes:
            raise ConfigError(f"model.{name}.num_classes must equal model.num_classes ({num_classes})")


def class_indices(labels: list[int | str], num_classes: int, names: list[str] | None) -> list[int]:
    """``sample.py labels=[...]`` as class indices: an int is an index, a string a class name (``names``,
    the ones stored with the run)."""
    indices = []
    for label in labels:
        if isinstance(label, int) and 0 <= label < num_classes:
            indices.append(label)
        elif names and str(label) in names:
            indices.append(names.index(str(label)))
        else:
            known = (
                f" or a class name ({', '.join(names[:12])}{', ...' if len(names) > 12 else ''})"
                if names
                else " (this checkpoint stores no class names)"
            )
            raise ConfigError(
                f"labels: {label!r} is not a class of this model: give an index in [0, {num_classes}){known}"
            )
    return indices
