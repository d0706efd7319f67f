"""What every genlab datamodule declares to the pipeline, the models and the callbacks."""

from collections.abc import Iterable
from typing import Any, ClassVar

import pytorch_lightning as pl
from torch.utils.data import Dataset


class GenlabDataModule(pl.LightningDataModule):
    """A datamodule's declared interface (read by the pipeline and callbacks, never probed).

    ``modality`` is matched against the model's; :meth:`model_inputs` names what the data gives the
    model (a vocabulary size, a label count), filled into the model config's ``null`` keys of those
    names; :meth:`split_id` identifies one split's examples for caches.
    """

    name: ClassVar[str] = "data"
    modality: ClassVar[str] = "image"
    #: Names of the classes, by label, when the data yields (example, label) pairs; else None.
    class_names: list[str] | None = None
    #: What :meth:`state_dict` keeps of the data that the model depends on (e.g. "text tokenizer"): a run
    #: resumed on another datamodule class takes that state over only where both declare the same kind.
    state_kind: ClassVar[str | None] = None

    @property
    def has_test_split(self) -> bool:
        """Whether :meth:`test_dataloader` has examples to serve (decided without loading them)."""
        raise NotImplementedError

    def missing_test_split(self) -> str | None:
        """Where the data has no test split but holds one that a setting can name without re-using training
        examples (a parallel corpus's test files): that setting, for ``eval.py split=test``; None by default."""
        return None

    def model_inputs(self) -> dict[str, Any]:
        """Model settings the data decides, by key (e.g. ``{"vocab_size": 65}``); none by default."""
        return {}

    def dataset(self, split: str) -> Dataset:
        """``split``'s examples (train, val or test): a map-style dataset, or for streamed data an iterable of
        ready batches."""
        raise NotImplementedError

    def eval_dataloader(self, split: str) -> Iterable:
        """``split``'s examples (train, val or test) as evaluation reads them: in order, unshuffled, sharded
        across ranks under DDP. ``val_dataloader`` and ``test_dataloader`` are this of their split."""
        raise NotImplementedError

    def split_id(self, split: str) -> str:
        """A string that changes whenever ``split``'s examples do (cache keys)."""
        raise NotImplementedError

    @classmethod
    def class_names_from_checkpoint(cls, checkpoint: dict[str, Any]) -> list[str] | None:
        """The class names a labelled run trained on, as its :meth:`state_dict` stored them (Lightning keeps
        a datamodule's state under its class's ``__qualname__``); None where none were stored."""
        return (checkpoint.get(cls.__qualname__) or {}).get("class_names")
