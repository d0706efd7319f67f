"""Text LightningDataModules: a tokenizer trained on the training split, tokens tensorised once.

:class:`TokenizedDataModule` holds what every text datamodule shares: the tokenizer (JSON, saved in the
run dir and in every checkpoint, ``state_dict``), the loaders, held-out prompts and characters per token.
Plain text (:class:`TextDataModule`): training batches are windows of ``block_size + 1`` tokens at random
offsets (as nanoGPT samples them); validation and test use consecutive non-overlapping windows. A parallel
corpus (:class:`ParallelDataModule`): one ``source <sep> target <eos>`` example per pair.
"""

import codecs
import gzip
import hashlib
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset, default_collate

from genlab.data.base import GenlabDataModule
from genlab.data.sampling import EpochShuffle, LengthGroupedShuffle, carve, eval_sampler, train_loader
from genlab.errors import CheckpointError, ConfigError, DataError, DatasetNotFoundError
from genlab.utils.files import atomic_write

log = logging.getLogger(__name__)
T = TypeVar("T")

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
MULTI30K_URL = "https://github.com/multi30k/dataset"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def cache_key(*parts: Any) -> str:
    """A short key for a cache entry made from ``parts`` (digests, options)."""
    return sha256(json.dumps(parts))[:16]


class CharTokenizer:
    """One token per character of the training text (sorted)."""

    kind = "char"

    def __init__(self, chars: list[str]):
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def train(cls, text: str, vocab_size: int | None = None) -> "CharTokenizer":
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.index[c] for c in text]
        except KeyError:
            raise self.unknown("".join(sorted(set(text) - set(self.index)))) from None

    def unknown(self, chars: str) -> DataError:
        return DataError(
            f"{chars!r}: not in the char tokenizer's vocabulary (the {len(self.chars)} characters of the text "
            "it was trained on); leave them out, or train with data.tokenizer=bpe, which encodes any text."
        )

    def encode_tensor(self, text: str) -> torch.Tensor:
        """:meth:`encode` as an int32 tensor, through a table of code points: 90M characters in 1.6 s here,
        against 13.7 s and a list of Python ints for :meth:`encode`."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        table = np.full(max(map(ord, self.chars), default=0) + 2, -1, dtype=np.int32)  # last: beyond them all
        table[[ord(c) for c in self.chars]] = np.arange(len(self.chars), dtype=np.int32)
        ids = table[np.minimum(codes, len(table) - 1)]
        if (ids < 0).any():
            raise self.unknown("".join(map(chr, np.unique(codes[ids < 0]))))
        return torch.from_numpy(ids)

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "chars": self.chars})


class BPETokenizer:
    """Byte-level BPE trained with the ``tokenizers`` library (or a pretrained Hugging Face tokenizer).

    One trained here learns its merges line by line (``lines``) and encodes a text line by line too: the
    segmentation it learned (over a whole text, the pre-tokenizer parts a line's trailing ``" \n"`` from what
    follows it when the next line begins with a letter, so the learned ``" \n"`` token could not apply), and
    the lines of a long text encode in parallel batches (a 20 MB text in 8.4 s instead of 17.3 s on 2 cores,
    ``bench/text_data.py``).
    Tokenizers stored before (no ``lines`` in their JSON) and pretrained ones encode a text whole."""

    kind = "bpe"
    LINES_PER_BATCH = 4096

    def __init__(self, tokenizer, lines: bool = False):
        self.tokenizer, self.lines = tokenizer, lines

    @classmethod
    def train(
        cls, text: str, vocab_size: int | None = None, specials: tuple[str, ...] = ()
    ) -> "BPETokenizer":
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size or 2048,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=list(specials),
            show_progress=False,
        )
        tokenizer.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
        learned = tokenizer.get_vocab_size()
        if vocab_size and learned < vocab_size:
            log.warning(
                "BPE tokenizer: %d tokens, fewer than data.vocab_size=%d: the training text allows no more "
                "merges (the model's vocabulary is %d)",
                learned,
                vocab_size,
                learned,
            )
        return cls(tokenizer, lines=True)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.encode_tensor(text).tolist() if self.lines else self.tokenizer.encode(text).ids

    def encode_tensor(self, text: str) -> torch.Tensor:
        """:meth:`encode` as an int32 tensor."""
        if not self.lines:
            return torch.tensor(self.tokenizer.encode(text).ids, dtype=torch.int32)
        lines, step = text.splitlines(keepends=True), self.LINES_PER_BATCH
        batches = (self.tokenizer.encode_batch_fast(lines[i : i + step]) for i in range(0, len(lines), step))
        ids = [np.asarray(encoding.ids, dtype=np.int32) for batch in batches for encoding in batch]
        return torch.from_numpy(np.concatenate(ids) if ids else np.zeros(0, dtype=np.int32))

    def encode_many(self, texts: list[str]) -> list[list[int]]:
        """:meth:`encode` of each text, the texts encoded in parallel (``encode_batch_fast``: no character
        offsets, which nothing here reads); a text of several lines goes line by line, as :meth:`encode` does."""
        if self.lines and any(len(text.splitlines()) > 1 for text in texts):
            return [self.encode(text) for text in texts]
        return [encoding.ids for encoding in self.tokenizer.encode_batch_fast(texts)]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def to_json(self) -> str:
        spec = {"kind": self.kind, "tokenizer": self.tokenizer.to_str()}
        return json.dumps({**spec, "lines": True} if self.lines else spec)


Tokenizer = CharTokenizer | BPETokenizer
TOKENIZERS = {"char": CharTokenizer, "bpe": BPETokenizer}


def pretrained_tokenizer(name_or_path: str) -> BPETokenizer:
    """A Hugging Face tokenizer: a folder holding ``tokenizer.json`` (``save_pretrained``), or online a Hub name."""
    from tokenizers import Tokenizer as HFTokenizer

    file = Path(name_or_path) / "tokenizer.json"
    if file.is_file():
        return BPETokenizer(HFTokenizer.from_file(str(file)))
    try:
        return BPETokenizer(HFTokenizer.from_pretrained(name_or_path))
    except Exception as e:  # tokenizers raises its own exception types for a missing model or no network
        raise ConfigError(
            f"data.tokenizer={name_or_path!r} is neither char, bpe, a folder holding tokenizer.json, nor a "
            f"Hugging Face Hub name reachable now ({type(e).__name__}); offline, give a folder."
        ) from e


def tokenizer_from_json(data: str) -> Tokenizer:
    spec = json.loads(data)
    if spec["kind"] == "char":
        return CharTokenizer(spec["chars"])
    from tokenizers import Tokenizer as HFTokenizer

    return BPETokenizer(HFTokenizer.from_str(spec["tokenizer"]), lines=spec.get("lines", False))


class TokenWindows(Dataset):
    """(input, target) pairs of ``block_size`` tokens, one window every ``stride`` tokens."""

    def __init__(self, tokens: torch.Tensor, block_size: int, stride: int):
        if len(tokens) <= block_size:
            raise DataError(f"{len(tokens)} tokens are too few for block_size={block_size}")
        self.tokens, self.block_size, self.stride = tokens, block_size, stride

    def __len__(self) -> int:
        return (len(self.tokens) - self.block_size - 1) // self.stride + 1

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = self.tokens[i * self.stride : i * self.stride + self.block_size + 1].long()
        return chunk[:-1], chunk[1:]


class TokenizedDataModule(GenlabDataModule):
    """A text datamodule: a tokenizer trained on the training split (or restored from a checkpoint) and
    every split encoded once.

    Subclasses implement :meth:`_encode_splits` (read the text, train ``self.tokenizer`` when it is None,
    encode each split and :meth:`_note` it), :meth:`dataset`, :meth:`_prompt_pairs` and
    :meth:`_no_test_message`.
    """

    modality: ClassVar[str] = "text"
    references: ClassVar[bool] = False  # eval targets are references: BLEU of decodes means something
    collate_fn: ClassVar[Callable | None] = None  # the loaders' (None: torch's default_collate)

    def __init__(
        self,
        block_size: int,
        batch_size: int,
        num_workers: int = 0,
        save_dir: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if batch_size <= 0 or block_size <= 0:
            raise ConfigError(
                f"data.batch_size and data.block_size must be positive, got {batch_size}, {block_size}"
            )
        self.block_size, self.batch_size, self.seed = block_size, batch_size, seed
        self.num_workers = num_workers
        self.save_dir = Path(save_dir) if save_dir else None
        self.tokenizer: Tokenizer | None = None
        self._chars_per_token: dict[str, float] = {}
        self._digests: dict[str, str] = {}  # per split: SHA-256 of its source text
        self._encoded = False

    @classmethod
    def tokenizer_from_checkpoint(cls, checkpoint: dict[str, Any]) -> Tokenizer:
        """The tokenizer trained with the run: Lightning saves the datamodule's :meth:`state_dict` under its
        class's ``__qualname__``."""
        state = checkpoint.get(cls.__qualname__) or {}
        if "tokenizer" not in state:
            raise CheckpointError(
                "The checkpoint holds no tokenizer: was it trained on a genlab text datamodule?"
            )
        return tokenizer_from_json(state["tokenizer"])

    @property
    def vocab_size(self) -> int:
        self.setup()
        return self.tokenizer.vocab_size

    @property
    def eos_id(self) -> int | None:
        """The token that ends a generation; None where the data has none (plain text)."""
        return None

    def prompt_ids(self, text: str) -> list[int]:
        """``sample.py``'s prompt as the model reads it: its tokens (a translation model: a source sentence)."""
        ids = self.tokenizer.encode(text)
        if not ids:
            raise ConfigError(
                "prompt is empty: the model continues text, so give it at least one token, e.g. "
                'prompt="\\n" (the default) or prompt="ROMEO:".'
            )
        return ids

    def model_inputs(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size}

    def split_id(self, split: str) -> str:
        """Identifies ``split``'s examples, e.g. ``text_file-val-3f2a9c1e``, for caches: name, split and a
        hash of the split's source text, the tokenizer and the block size."""
        self._require(split)
        key = "\n".join([self._digests[split], self.tokenizer.to_json(), str(self.block_size)])
        return f"{self.name}-{split}-{sha256(key)[:8]}"

    def setup(self, stage: str | None = None) -> None:
        if self._encoded:
            return
        self._encode_splits()
        self._encoded = True
        if self.save_dir is not None:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            (self.save_dir / "tokenizer.json").write_text(self.tokenizer.to_json())

    def _encode_splits(self) -> None:
        raise NotImplementedError

    def _note(self, split: str, digest: str, chars: int, tokens: int) -> None:
        """Records the SHA-256 of ``split``'s source text (for :meth:`split_id`) and its characters per token."""
        self._digests[split] = digest
        self._chars_per_token[split] = chars / max(tokens, 1)

    def _no_test_message(self) -> str:
        raise NotImplementedError

    def _require(self, split: str) -> None:
        """Encodes the splits, or names the fix where ``split`` is a test split the data lacks."""
        if split == "test" and not self.has_test_split:
            raise ConfigError(self._no_test_message())
        self.setup()

    def chars_per_token(self, split: str) -> float:
        """Characters per token of ``split``'s text, targets only where there are sources (bits per
        character = bits per token / this)."""
        self._require(split)
        return self._chars_per_token[split]

    def bleu_pairs(self, n: int | None, split: str) -> list[tuple[list[int], str]]:
        """(prompt token ids, true continuation or reference) of the first ``n`` (None: all) held-out
        examples of ``split``."""
        self._require(split)
        return self._prompt_pairs(n, split)

    def _prompt_pairs(self, n: int | None, split: str) -> list[tuple[list[int], str]]:
        raise NotImplementedError

    def dataset(self, split: str) -> Dataset:
        """``split``'s (input, target) examples."""
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return train_loader(
            self.dataset("train"),
            self.batch_size,
            self.seed,
            sampler=self._train_sampler(),
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
        )

    def _train_sampler(self) -> EpochShuffle | None:
        """The training order; None: :func:`train_loader`'s plain shuffle."""
        return None

    def eval_dataloader(self, split: str) -> DataLoader:
        data = self.dataset(split)
        return DataLoader(
            data,
            self.batch_size,
            sampler=eval_sampler(data),
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")

    def state_dict(self) -> dict:
        return {"tokenizer": self.tokenizer.to_json()} if self.tokenizer else {}

    def load_state_dict(self, state: dict) -> None:
        """Takes the run's tokenizer: Lightning restores it on resuming, and the pipeline before any text is
        encoded, so that a resumed run reads its text (another one included) with the model's vocabulary."""
        if "tokenizer" in state:
            self.tokenizer = tokenizer_from_json(state["tokenizer"])


class TextDataModule(TokenizedDataModule):
    """Splits a text into contiguous train | val | test parts and tokenises each once.

    val is the ``val_fraction`` after the training part, test the last ``test_fraction`` (none at 0). With
    ``token_cache`` (a folder) the tokenizer learned from a text and each split's tokens are kept there, keyed
    by the text and the options that shape them, and reused while they are unchanged: a 100 MB text is
    tokenised once, not by every run, sweep job and evaluation (4096-token BPE: 75 s here).
    """

    name = "text"
    references = False  # held-out continuations, not references: eval.py reports no BLEU on them
    state_kind = "text tokenizer"

    def __init__(
        self,
        tokenizer: str = "char",
        vocab_size: int | None = None,
        block_size: int = 256,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        num_workers: int = 0,
        save_dir: str | None = None,
        seed: int = 0,
        token_cache: str | None = None,
    ):
        if not (val_fraction > 0 and test_fraction >= 0 and val_fraction + test_fraction < 1):
            raise ConfigError(
                f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must satisfy "
                "0 < val_fraction, 0 <= test_fraction and val_fraction + test_fraction < 1"
            )
        super().__init__(block_size, batch_size, num_workers, save_dir, seed)
        self.tokenizer_kind, self.requested_vocab = tokenizer, vocab_size  # char | bpe | a pretrained one
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.token_cache = Path(token_cache).expanduser() if token_cache else None
        self.train_tokens: torch.Tensor | None = None
        self.val_tokens: torch.Tensor | None = None
        self.test_tokens: torch.Tensor | None = None

    def load_text(self) -> str:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        restored = self.tokenizer.kind if self.tokenizer else None
        if restored and (restored == "char") != (self.tokenizer_kind == "char"):
            raise ConfigError(
                f"data.tokenizer={self.tokenizer_kind}: the checkpoint's model reads a {restored} vocabulary of "
                f"{self.tokenizer.vocab_size} tokens, which a resumed run keeps: resume with "
                f"data.tokenizer={restored}, or start a new run (without ckpt_path) to learn another vocabulary."
            )

    @property
    def has_test_split(self) -> bool:
        """Whether a test part is held out (``test_fraction`` > 0)."""
        return self.test_fraction > 0

    def _encode_splits(self) -> None:
        text = self.load_text()
        val_start = int(len(text) * (1 - self.val_fraction - self.test_fraction))
        test_start = int(len(text) * (1 - self.test_fraction))
        parts = {
            "train": text[:val_start],
            "val": text[val_start:test_start],
            "test": text[test_start:] if self.has_test_split else None,
        }
        digests = {split: sha256(part) for split, part in parts.items() if part is not None}
        if self.tokenizer is None and self.tokenizer_kind not in TOKENIZERS:
            self.tokenizer = pretrained_tokenizer(self.tokenizer_kind)
        elif self.tokenizer is None:
            # char: every character of the whole text, as nanoGPT, so a symbol that occurs only in the
            # validation part still encodes; BPE learns its merges on the training part and covers any
            # text with its byte alphabet.
            char = self.tokenizer_kind == "char"
            learned_from = sha256(text) if char else digests["train"]
            self.tokenizer = self._cached(
                f"tokenizer-{cache_key(learned_from, self.tokenizer_kind, self.requested_vocab)}.json",
                lambda: TOKENIZERS[self.tokenizer_kind].train(
                    text if char else parts["train"], self.requested_vocab
                ),
                save=lambda tokenizer, f: f.write(tokenizer.to_json().encode()),
                load=lambda path: tokenizer_from_json(path.read_text()),
            )
        for split, part in parts.items():
            if part is not None:
                tokens = self._cached(
                    f"tokens-{cache_key(digests[split], self.tokenizer.to_json())}.npy",
                    lambda part=part: self.tokenizer.encode_tensor(part),
                    save=lambda tokens, f: np.save(f, tokens.numpy()),
                    load=lambda path: torch.from_numpy(np.load(path)),
                )
                setattr(self, f"{split}_tokens", tokens)
                self._note(split, digests[split], len(part), len(tokens))

    def _cached(self, name: str, make: Callable[[], T], save: Callable, load: Callable[[Path], T]) -> T:
        """``make()``, or what ``token_cache`` holds under ``name`` (written there on a miss)."""
        path = self.token_cache / name if self.token_cache is not None else None
        if path is not None and path.is_file():
            try:
                return load(path)
            except (OSError, ValueError, KeyError) as err:  # damaged: made and written again
                log.warning("token cache %s unreadable (%s): encoding again", path, err)
        made = make()
        if path is not None:
            atomic_write(path, lambda f: save(made, f))
        return made

    def _no_test_message(self) -> str:
        return (
            f"data={self.name} has no test split: set data.test_fraction=0.1 to hold out the end of "
            "the text, or evaluate split=val"
        )

    def _tokens(self, split: str) -> torch.Tensor:
        self._require(split)
        return {"train": self.train_tokens, "val": self.val_tokens, "test": self.test_tokens}[split]

    def dataset(self, split: str) -> TokenWindows:
        """Windows of ``split``'s tokens: at every offset for training, consecutive for evaluation."""
        lengths = {
            s: len(self._tokens(s)) for s in ("train", "val", "test") if s != "test" or self.has_test_split
        }
        shortest = min(lengths, key=lengths.get)  # named first: the fix must fit every split
        if lengths[shortest] <= self.block_size:
            raise DataError(self._too_short_message(shortest, lengths[shortest]))
        stride = 1 if split == "train" else self.block_size
        return TokenWindows(self._tokens(split), self.block_size, stride=stride)

    def _too_short_message(self, split: str, tokens: int) -> str:
        """Which split is too short for one window of ``block_size`` + 1 tokens, and what to change."""
        fixes = ["a longer text"]
        if tokens > 1:
            fixes.append(f"data.block_size<={tokens - 1}")
        if split != "train":
            fixes.append(f"a larger data.{split}_fraction (now {getattr(self, f'{split}_fraction')})")
        return (
            f"The {split} split of data={self.name} holds {tokens} tokens, too few for one window of "
            f"data.block_size={self.block_size} (+1 target): use " + ", or ".join(fixes) + "."
        )

    def _prompt_pairs(self, n: int | None, split: str) -> list[tuple[list[int], str]]:
        """The first half of ``split``'s windows and their true continuations."""
        half = self.block_size // 2
        tokens = self._tokens(split)[: n * self.block_size if n is not None else None]
        windows = tokens[: len(tokens) // self.block_size * self.block_size].long().view(-1, self.block_size)
        return [(w[:half], self.tokenizer.decode(w[half:])) for w in windows.tolist()]


TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")  # and the same gzipped (.txt.gz), and names without one
RECORD_SUFFIXES = (".jsonl", ".ndjson", ".json")  # records whose `data.text_field` holds a document each


class TextFileDataModule(TextDataModule):
    """Any UTF-8 text file (e.g. tiny shakespeare), or a folder of them (a book's chapters): its text files
    (``TEXT_SUFFIXES``, gzipped too, or no suffix as `split` writes; hidden ones skipped), subfolders included,
    in path order, joined by a blank line. JSON Lines and JSON files (``RECORD_SUFFIXES``, as corpora and
    Hugging Face datasets export them) give the ``text_field`` of each record, a document each, joined the same
    way. The splits are contiguous either way: validation is the end."""

    name = "text_file"

    def __init__(self, path: str | None = None, text_field: str = "text", encoding: str = "utf-8", **kwargs):
        super().__init__(**kwargs)
        self.path = Path(path).expanduser() if path else None
        self.text_field = text_field
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ConfigError(
                f"data.encoding={encoding} is no encoding Python knows: e.g. utf-8, cp1252, latin-1, utf-16."
            ) from None
        self.encoding = encoding

    def files(self) -> list[Path]:
        """The text files ``data.path`` names: itself, or those of the folder in path order."""
        if self.path is None:
            raise DatasetNotFoundError(
                f"data.path is not set: give a UTF-8 text file, e.g. data.path=input.txt (Tiny Shakespeare: {SHAKESPEARE_URL})."
            )
        if self.path.is_file():
            return [self.path]
        if not self.path.is_dir():
            raise DatasetNotFoundError(
                f"data.path={self.path} does not exist: give a UTF-8 text file or a folder of them."
            )
        files = sorted(
            p
            for p in self.path.rglob("*")
            if p.is_file()
            and (not p.suffix or p.name.lower().removesuffix(".gz").endswith(TEXT_SUFFIXES + RECORD_SUFFIXES))
            and not any(part.startswith(".") for part in p.relative_to(self.path).parts)
        )
        if not files:
            raise DatasetNotFoundError(
                f"data.path={self.path} holds no text files ({', '.join(TEXT_SUFFIXES + RECORD_SUFFIXES)}, gzipped, "
                "or without a suffix): "
                "give a UTF-8 text file or a folder of them."
            )
        return files

    def load_text(self) -> str:
        texts = [self.read(f) for f in self.files()]
        text = texts[0] if len(texts) == 1 else "\n\n".join(t.strip("\n") for t in texts)
        if not text.strip():
            raise DataError(f"data.path={self.path} holds no text: give a UTF-8 text file to train on.")
        return text

    def read(self, path: Path) -> str:
        """The text of one file: as it is, or a JSON (Lines) file's records, a blank line between them."""
        if path.name.lower().removesuffix(".gz").endswith(RECORD_SUFFIXES):
            records = read_records(path, self.text_field, self.encoding, "data.encoding")
            return "\n\n".join(doc.strip("\n") for doc in records)
        return read_text(path, self.encoding, "data.encoding")


class TextDocsDataModule(TextDataModule):
    """English prose that ships with Python: the help topics of ``pydoc_data.topics`` (offline)."""

    name = "text_docs"

    def load_text(self) -> str:
        from pydoc_data.topics import topics

        return "\n\n".join(topics[key].strip() for key in sorted(topics))


BYTE_ORDER_MARKS = (  # UTF-32's little-endian mark begins with UTF-16's: checked first
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
GZIP_MAGIC = b"\x1f\x8b"
DOCUMENTS = {  # leading bytes: (what the file is, the command that extracts its text)
    b"%PDF": ("a PDF document", "pdftotext {name} {stem}.txt"),
    b"PK\x03\x04": (
        "a ZIP archive (as EPUB, DOCX and ODT documents are)",
        "pandoc {name} -t plain -o {stem}.txt",
    ),
    b"PAR1": (
        "a Parquet table (as Hugging Face datasets store them)",
        "python -c \"import pandas; pandas.read_parquet('{name}').to_json('{stem}.jsonl', orient='records', "
        'lines=True, force_ascii=False)"',
    ),
}


def read_text(path: Path, encoding: str = "utf-8", option: str | None = None) -> str:
    """The text of ``path``: UTF-8 (a byte-order mark, as Windows editors write, dropped) or ``encoding``, and
    UTF-16/32 with their byte-order mark (Windows Notepad's "Unicode") whatever ``encoding`` says; gzipped
    files (by content, whatever the name) are decompressed, and every line ending reads as ``\\n``. A document
    (PDF, EPUB, DOCX), another binary file or text in another encoding gets one error naming the file and the
    fix: ``option``, the setting that chooses the encoding, where the caller has one."""
    with open(path, "rb") as f:
        opener = gzip.open if f.read(2) == GZIP_MAGIC else open
    try:
        with opener(path, "rb") as f:
            head = f.read(1024)
        for magic, (kind, command) in DOCUMENTS.items():
            if head.startswith(magic):
                fix = command.format(name=path.name, stem=path.stem)
                raise DataError(
                    f"{path} is {kind}, not plain text: extract its text first, e.g. `{fix}`, and give that file."
                )
        codec = codecs.lookup(encoding).name
        marked = next((name for mark, name in BYTE_ORDER_MARKS if head.startswith(mark)), None)
        # an 8-bit code decodes any bytes: a NUL in the first KB is what tells a binary file
        if marked is None and b"\0" in head and not codec.startswith("utf-"):
            raise DataError(f"{path} is a binary file, not text: give a text file.")
        with opener(path, "rt", encoding=marked or ("utf-8-sig" if codec == "utf-8" else encoding)) as f:
            return f.read()
    except (gzip.BadGzipFile, EOFError) as err:
        raise DataError(f"{path} is a damaged gzip file ({err}): download or compress it again.") from None
    except UnicodeDecodeError:
        if b"\0" in head and marked is None:
            raise DataError(f"{path} is a binary file, not text: give a text file.") from None
        with opener(path, "rb") as f:
            raw = f.read()
        where = "undecodable bytes"
        try:  # decoded whole: the reader's error counts from its chunk, this one from the file's start
            raw.decode(marked or ("utf-8-sig" if codec == "utf-8" else encoding))
        except UnicodeDecodeError as err:
            where = f"{err.reason} at byte {err.start}"
        windows = any(0x80 <= b <= 0x9F for b in raw)  # printable in cp1252, controls in latin-1
        guess = "latin-1" if not windows or encoding == "cp1252" else "cp1252"
        choose = f"set {option}={guess} (or the text's own encoding), or " if option else ""
        raise DataError(
            f"{path} is not valid {(marked or codec).upper()} ({where}); {choose}convert it, e.g. "
            f"`iconv -f {guess} -t utf-8 {path.name} > {path.name}.utf8` and use the .utf8 file."
        ) from None


def read_records(path: Path, field: str, encoding: str = "utf-8", option: str | None = None) -> list[str]:
    """The ``field`` of each record of a JSON Lines file (an object per line; blank lines skipped) or of a JSON
    file holding a list of them; a record that is a string is its own text. A line that is not JSON, or a record
    without the field, is one error naming the line and the fix."""
    text = read_text(path, encoding, option)
    whole = _json_document(text) if path.name.lower().removesuffix(".gz").endswith(".json") else None
    if whole is not None:
        numbered, where = list(enumerate(whole if isinstance(whole, list) else [whole], start=1)), "record"
    else:
        numbered, where = _json_lines(path, text), "line"
    texts = []
    for number, record in numbered:
        if isinstance(record, dict) and isinstance(record.get(field), str):
            texts.append(record[field])
        elif isinstance(record, str):
            texts.append(record)
        elif isinstance(record, dict):
            keys = [k for k, v in record.items() if isinstance(v, str)]
            choose = f": set data.text_field to one of {', '.join(keys)}" if keys else ""
            raise DataError(f"{path}: {where} {number} has no text field {field!r}{choose}.")
        else:
            kind = type(record).__name__
            raise DataError(f"{path}: {where} {number} is {kind}, not an object with a text field.")
    return texts


def _json_document(text: str) -> Any:
    """``text`` as one JSON document; None where it is not one (JSON Lines under a ``.json`` name)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _json_lines(path: Path, text: str) -> list[tuple[int, Any]]:
    """(line number, record) of each non-blank line of JSON Lines ``text``."""
    records = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}: line {number} is not JSON ({err.msg}): give one JSON object per line (JSON Lines)."
            ) from None
    return records


#: Column names of a TSV's header line besides the languages' codes (pandas' and HF datasets' exports).
HEADER_NAMES = {("source", "target"), ("src", "tgt"), ("src", "trg")}


def read_pairs(path: Path, languages: tuple[str, str] | None = None) -> list[tuple[str, str]]:
    """The source<TAB>target pairs of a TSV file (blank lines skipped), or one error naming the bad lines; for
    lines of three or more fields (Tatoeba's exports add an attribution), the command that keeps two. A first
    line naming the columns (``de<TAB>en`` for ``languages`` de, en, or ``source<TAB>target``) is a header,
    skipped with a line saying so."""
    lines = enumerate(_read_lines(path), start=1)
    rows = {number: line.split("\t") for number, line in lines if line}
    first = next(iter(rows), None)
    header = HEADER_NAMES | ({tuple(c.lower() for c in languages)} if languages else set())
    if first is not None and tuple(field.strip().lower() for field in rows[first]) in header:
        log.info(
            "%s: line %d (%s) names the columns: skipped as a header", path, first, " | ".join(rows[first])
        )
        del rows[first]
    bad = [number for number, row in rows.items() if len(row) != 2]
    if bad and all(len(rows[number]) > 2 for number in bad):
        fields = len(rows[bad[0]])
        raise DataError(
            f"{path}: lines {bad[:5]} hold {fields} tab-separated fields, not source<TAB>target; keep the first "
            f"two, e.g. `cut -f1,2 {path.name} > pairs.tsv`, and give that file."
        )
    if bad:
        raise DataError(f"{path}: lines {bad[:5]} do not hold exactly one tab (source<TAB>target).")
    return [(a, b) for a, b in rows.values()]


def _read_lines(path: Path) -> list[str]:
    """Lines split on newlines only (not on other Unicode breaks, which would misalign a corpus)."""
    lines = read_text(path).split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def trim_padding(rows: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """Stacks (input, target) rows, then drops the columns after the last one holding a target in any row
    (rounded up to a multiple of 8). A causal model's outputs at the kept positions do not depend on the
    dropped ones, and the dropped targets are all -100, so the loss is the same at a fraction of the compute.
    """
    x, y = default_collate(rows)
    used = (y != -100).any(0).nonzero()
    length = min(x.shape[1], -(-(int(used[-1]) + 1) // 8) * 8) if len(used) else x.shape[1]
    return [x[:, :length], y[:, :length]]


# a file suffix that names a language (ISO 639-1/-3, with a region: de, en, pt_br), not a file format
LANGUAGE_CODE = re.compile(r"(?!(?:txt|tsv|csv|pdf|md|rst|xml|json|zip|doc)$)[a-z]{2,3}([_-][a-z]{2})?")


class ParallelDataModule(TokenizedDataModule):
    """A parallel corpus for conditional generation with a decoder-only model.

    Layout: ``<root>/<split>.<lang>[.gz]`` line-aligned files (Multi30k) or ``<root>/<split>.tsv``
    (source<TAB>target); or ``root`` one such TSV file of pairs, carved into train / val / test by
    ``val_fraction`` and ``test_fraction`` in a seeded order. Each pair becomes ``source <sep> target <eos>``;
    the loss covers the target only. ``tokenizer=bpe``: a byte-level BPE trained on both sides of the training split, with
    ``<pad> <sep> <eos>`` of its own; a pretrained tokenizer (``model.init_from``) keeps its vocabulary:
    ``<sep>`` is its newline token and ``<pad>``/``<eos>`` its end-of-text token (GPT-2's ``<|endoftext|>``).
    The test split (``test_split``, e.g. Multi30k's ``test_2016_flickr``) is read when its files exist.
    Batches are cut to their longest pair (:func:`trim_padding`); ``group_by_length`` also batches pairs of
    similar length together (:class:`~genlab.data.sampling.LengthGroupedShuffle`), less padding again.
    """

    name = "parallel"
    references = True  # targets are reference translations: BLEU of decodes is meaningful
    state_kind = "parallel tokenizer"  # with <pad> <sep> <eos>
    collate_fn = staticmethod(trim_padding)
    SPECIALS = ("<pad>", "<sep>", "<eos>")
    END_OF_TEXT = (
        "<|endoftext|>",
        "</s>",
        "<eos>",
        "[SEP]",
    )  # a pretrained tokenizer's end token, first found

    def __init__(
        self,
        root: str | None = None,
        source: str = "de",
        target: str = "en",
        tokenizer: str = "bpe",
        vocab_size: int | None = 8000,
        block_size: int = 128,
        batch_size: int = 64,
        num_workers: int = 0,
        save_dir: str | None = None,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str | None = "test",
        group_by_length: bool = False,
        val_fraction: float = 0.05,
        test_fraction: float = 0.0,
        seed: int = 0,
    ):
        super().__init__(block_size, batch_size, num_workers, save_dir, seed)
        self.group_by_length = group_by_length
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.root = Path(root).expanduser() if root else None
        self.source, self.target, self.vocab_size_requested = source, target, vocab_size
        self.tokenizer_kind = tokenizer  # bpe | a pretrained one (folder with tokenizer.json, or Hub name)
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None
        self.prompts: dict[str, list[tuple[list[int], str]]] = {}  # per eval split: (prompt ids, reference)

    def _files(self, split: str) -> tuple[Path, Path] | Path | None:
        """The (source, target) files or the TSV file of ``split``, whichever exists first."""
        if self.root is None:
            raise DatasetNotFoundError(
                "data.root is not set: give the folder of a parallel corpus (<split>.<lang>[.gz] or <split>.tsv), "
                f"e.g. Multi30k's data/task1/raw from {MULTI30K_URL}."
            )
        for ext in (".gz", ""):
            src, tgt = self.root / f"{split}.{self.source}{ext}", self.root / f"{split}.{self.target}{ext}"
            if src.is_file() and tgt.is_file():
                return src, tgt
        tsv = self.root / f"{split}.tsv"
        return tsv if tsv.is_file() else None

    @property
    def one_file(self) -> bool:
        """Whether ``data.root`` is one file of pairs (carved into splits) rather than a corpus folder."""
        return self.root is not None and self.root.is_file()

    @property
    def has_test_split(self) -> bool:
        """Whether the ``test_split`` files exist (one file: whether ``test_fraction`` carves a test split)."""
        if self.one_file:
            return self.test_fraction > 0
        return self.splits["test"] is not None and self._files(self.splits["test"]) is not None

    def carve_file(self) -> dict[str, list[tuple[str, str]]]:
        """The pairs of the one file ``data.root`` as train / val (/ test) by the fractions, in a seeded order."""
        pairs = read_pairs(self.root, (self.source, self.target))
        held = f"{self.root} holds {len(pairs)} pair{'s' if len(pairs) != 1 else ''}"
        splits = carve(len(pairs), self.val_fraction, self.test_fraction, self.seed, held, "pairs")
        ranges = dict(zip(("train", "val", "test"), splits))
        return {split: [pairs[i] for i in rows] for split, rows in ranges.items() if rows}

    def read_split(self, split: str) -> list[tuple[str, str]]:
        files = self._files(split)
        if isinstance(files, tuple):
            src, tgt = files
            sources, targets = _read_lines(src), _read_lines(tgt)
            if len(sources) != len(targets):
                raise DataError(
                    f"{src.name} has {len(sources)} lines but {tgt.name} has {len(targets)}: line i of one "
                    "must translate line i of the other."
                )
            return list(zip(sources, targets))
        if files is not None:
            return read_pairs(files, (self.source, self.target))
        role = next((role for role, stem in self.splits.items() if stem == split), "train")
        raise DatasetNotFoundError(
            f"No {split} split in {self.root}: expected {split}.{self.source}[.gz] + {split}.{self.target}[.gz] "
            f"(Multi30k layout) or {split}.tsv; {self._stems_hint(role)}."
        )

    def _file_names(self) -> list[list[str]]:
        """The names of ``data.root``'s files split at dots, ``.gz`` left off: ``[["train", "de"], ...]``."""
        files = self.root.glob("*.*") if self.root.is_dir() else []
        return [p.name.removesuffix(".gz").split(".") for p in files]

    def _free_stems(self, role: str) -> list[str]:
        """The splits ``data.root`` holds for the languages asked that ``role`` could take: for val and test, none
        the other roles already read (a test split that is the training split tests nothing)."""
        taken = {stem for other, stem in self.splits.items() if other != role} if role != "train" else set()
        stems = {name[0] for name in self._file_names()} - taken
        return [stem for stem in sorted(stems) if self._files(stem) is not None]

    def _stems_hint(self, role: str) -> str:
        """The fix for a missing split: the splits ``data.root`` holds (for the languages asked) and the option
        that chooses one; else the languages its files are in, or data.root when it holds none."""
        if stems := self._free_stems(role):
            if len(stems) == 1:
                return f"it holds the split {stems[0]}: set data.{role}_split={stems[0]}"
            return f"it holds the splits {', '.join(stems)}: set data.{role}_split to one of them"
        names = self._file_names()
        languages = sorted({n[-1] for n in names if len(n) == 2 and LANGUAGE_CODE.fullmatch(n[-1])})
        if languages:
            return f"its files are in {', '.join(languages)}: set data.source and data.target to two of them"
        return "set data.root to the corpus folder"

    @property
    def eos_id(self) -> int:
        """``<eos>``: ends every target, and a generation."""
        return self.special("<eos>")

    def prompt_ids(self, text: str) -> list[int]:
        """A source sentence as the model reads it before translating: its tokens (at most half the block, as
        in training) and ``<sep>``."""
        return self._prompt(self.tokenizer.encode(text))

    def _prompt(self, source: list[int]) -> list[int]:
        return source[: self.block_size // 2] + [self.special("<sep>")]

    def special(self, token: str) -> int:
        """The id of ``<pad>``, ``<sep>`` or ``<eos>``: the tokenizer's own, or a pretrained tokenizer's stand-in."""
        own = self.tokenizer.tokenizer.token_to_id(token)
        if own is not None:
            return own
        if token == "<sep>":
            newline = self.tokenizer.encode("\n")
            if len(newline) == 1:
                return newline[0]
        elif end := next(
            (t for t in self.END_OF_TEXT if self.tokenizer.tokenizer.token_to_id(t) is not None), None
        ):
            return self.tokenizer.tokenizer.token_to_id(end)
        raise ConfigError(
            f"data.tokenizer={self.tokenizer_kind!r} has no {token} stand-in (an end-of-text token such as "
            f"{self.END_OF_TEXT[0]} and a one-token newline): use data.tokenizer=bpe, or a GPT-2-family tokenizer."
        )

    def _encode_splits(self) -> None:
        splits = ["train", "val"] + (["test"] if self.has_test_split else [])
        if self.one_file:
            pairs = self.carve_file()
        else:
            pairs = {split: self.read_split(self.splits[split]) for split in splits}
        if self.tokenizer is None and self.tokenizer_kind != "bpe":
            self.tokenizer = pretrained_tokenizer(self.tokenizer_kind)
        elif self.tokenizer is None:
            text = "\n".join(f"{a}\n{b}" for a, b in pairs["train"])
            self.tokenizer = BPETokenizer.train(text, self.vocab_size_requested, specials=self.SPECIALS)
        for split in splits:
            dataset = self._encode(pairs[split])
            setattr(self, f"{split}_set", dataset)
            target_tokens = int((dataset.tensors[1] != -100).sum())  # target tokens and <eos>
            target_chars = sum(len(b) + 1 for _, b in pairs[split])  # <eos> counts as the line's end
            self._note(
                split, sha256("\n".join(f"{a}\t{b}" for a, b in pairs[split])), target_chars, target_tokens
            )
            if split != "train":
                sources = self.tokenizer.encode_many([a for a, _ in pairs[split]])
                self.prompts[split] = [(self._prompt(ids), b) for ids, (_, b) in zip(sources, pairs[split])]

    def _encode(self, pairs: list[tuple[str, str]]) -> TensorDataset:
        pad, sep, eos = (self.special(t) for t in self.SPECIALS)
        n, length = len(pairs), self.block_size
        x = torch.full((n, length), pad, dtype=torch.long)
        y = torch.full((n, length), -100, dtype=torch.long)
        sources = self.tokenizer.encode_many([a for a, _ in pairs])
        targets = self.tokenizer.encode_many([b for _, b in pairs])
        for i, (source, target) in enumerate(zip(sources, targets)):
            src = source[: length // 2]
            seq = torch.tensor([*src, sep, *target, eos][: length + 1])
            x[i, : len(seq) - 1], y[i, : len(seq) - 1] = seq[:-1], seq[1:]
            y[i, : len(src)] = -100  # no loss on the source or on predicting <sep>
        return TensorDataset(x, y)

    def _train_sampler(self) -> EpochShuffle | None:
        if not self.group_by_length:
            return None
        targets = self.dataset("train").tensors[1] != -100
        lengths = targets.long().cumsum(1).argmax(1) + 1  # up to the last target, as trim_padding keeps
        return LengthGroupedShuffle(lengths, self.batch_size, self.seed)

    def _no_test_message(self) -> str:
        if self.one_file:
            return (
                f"data={self.name} has no test split: set data.test_fraction (e.g. 0.05) to carve one from "
                f"{self.root}, or evaluate split=val"
            )
        stem = self.splits["test"]
        return (
            f"data={self.name} has no test split: no {stem}.{self.source}[.gz] + {stem}.{self.target}[.gz] "
            f"or {stem}.tsv in {self.root}; {self._stems_hint('test')}, or evaluate split=val"
        )

    def missing_test_split(self) -> str | None:
        free = self.root.is_dir() and not self.has_test_split and self._free_stems("test")
        return self._stems_hint("test") if free else None

    def dataset(self, split: str) -> TensorDataset:
        """``split``'s pairs as (input, target) rows of ``block_size`` tokens, target -100 off the target."""
        self._require(split)
        return getattr(self, f"{split}_set")

    def _prompt_pairs(self, n: int | None, split: str) -> list[tuple[list[int], str]]:
        """The first ``n`` sources of ``split`` (up to ``<sep>``) and their reference translations."""
        return self.prompts[split][:n]
