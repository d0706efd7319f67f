"""A big text's set-up, as `train.py data=text_file data.path=<text>` does it: time and memory.

The corpus is Tiny Shakespeare copied to ``--mb`` megabytes, each copy's lines in a fresh seeded order (the
size of enwik8; BPE learns from real text). Each measurement against its baseline, in one run:

- **set-up** (``data=text_file``'s config, composed as `train.py` composes it; each in a fresh process, whose
  peak RSS is reported): the datamodule's ``setup()`` and its first training batch, char-level and with a
  4096-token BPE, on a cold token cache (tokenizer learned, every split encoded) against a warm one (the
  tokenizer and tokens of ``data.token_cache`` read back);
- **char encoding**: ``CharTokenizer.encode_tensor`` (a table of code points) against encoding character by
  character into a list of Python ints (what it did before);
- **BPE encoding**: a BPE learned here encoding its text line by line in parallel batches, as it learned its
  merges, against the same tokenizer over the whole text at once (what it did before);
- **sampler memory**: the Python objects one process holds while it starts an epoch over every training
  window (tracemalloc's peak, over at most 10M windows): genlab's ``EpochShuffle`` against torch's ``RandomSampler`` in Lightning's
  ``DistributedSamplerWrapper`` (what Lightning gives a sampler that is not distributed).

    python bench/text_data.py [--mb 100] [--quick]
"""

import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from lightning_fabric.utilities.distributed import DistributedSamplerWrapper
from torch.utils.data import RandomSampler

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHAKESPEARE, compose_train, run_dir  # noqa: E402
from _results import bench_parser, report  # noqa: E402

from genlab.data.sampling import EpochShuffle  # noqa: E402
from genlab.data.text import BPETokenizer, CharTokenizer  # noqa: E402

VOCAB = 4096
SAMPLER_WINDOWS = 10_000_000  # tracemalloc's own records of the baseline's 10M ints already take GBs


def write_corpus(path: Path, megabytes: float, seed: int = 0) -> Path:
    """Tiny Shakespeare, copied until ``megabytes``, each copy's lines shuffled by ``seed``."""
    lines = SHAKESPEARE.read_text().splitlines(keepends=True)
    rng = np.random.default_rng(seed)
    target, written = int(megabytes * 1e6), 0
    with open(path, "w") as f:
        while written < target:
            copy = "".join(lines[i] for i in rng.permutation(len(lines)))[: target - written]
            written += f.write(copy)
    return path


def set_up(corpus: Path, tokenizer: str, cache: Path) -> dict:
    """In this process: the datamodule of ``data=text_file`` built, set up and its first batch drawn."""
    extra = [f"data.vocab_size={VOCAB}"] if tokenizer == "bpe" else []
    cfg = compose_train(
        [
            "model=gpt",
            "data=text_file",
            f"data.path={corpus}",
            f"data.tokenizer={tokenizer}",
            f"data.token_cache={cache}",
            *extra,
        ]
    )
    imports_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # torch, Lightning, Hydra
    with run_dir(cfg):  # the tokenizer.json of the run dir
        start = time.perf_counter()
        datamodule = instantiate(cfg.data, _convert_="all")
        datamodule.setup("fit")
        ready = time.perf_counter()
        next(iter(datamodule.train_dataloader()))
    return {
        "setup_s": round(ready - start, 2),
        "first_batch_s": round(time.perf_counter() - ready, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "imports_rss_mb": round(imports_mb),
        "train_tokens": len(datamodule.train_tokens),
        "vocab_size": datamodule.tokenizer.vocab_size,
    }


def set_up_alone(corpus: Path, tokenizer: str, cache: Path) -> dict:
    """:func:`set_up` in a fresh process: its peak RSS is the set-up's own."""
    argv = [sys.executable, __file__, "--set-up", str(corpus), tokenizer, str(cache)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"set-up of {tokenizer} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def setups(corpus: Path, tokenizer: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="genlab_tokens_") as cache:
        cold = set_up_alone(corpus, tokenizer, Path(cache))
        warm = set_up_alone(corpus, tokenizer, Path(cache))
    return {"cold": cold, "warm": warm, "warm_vs_cold_s": round(warm["setup_s"] / cold["setup_s"], 3)}


def seconds(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def char_encoding(text: str) -> dict:
    tokenizer = CharTokenizer.train(text)
    table_s, ids = seconds(lambda: tokenizer.encode_tensor(text))
    listed_s, before = seconds(lambda: torch.tensor(tokenizer.encode(text), dtype=torch.int32))
    assert torch.equal(ids, before), "the table encodes as the characters' list does"
    return {
        "chars": len(text),
        "table_s": round(table_s, 2),
        "per_char_s": round(listed_s, 2),
        "ratio": round(table_s / listed_s, 3),
    }


def bpe_encoding(text: str) -> dict:
    learned_s, tokenizer = seconds(lambda: BPETokenizer.train(text, VOCAB))
    whole = BPETokenizer(tokenizer.tokenizer, lines=False)
    lines_s, ids = seconds(lambda: tokenizer.encode_tensor(text))
    whole_s, before = seconds(lambda: whole.encode_tensor(text))
    return {
        "chars": len(text),
        "learn_s": round(learned_s, 2),
        "lines_s": round(lines_s, 2),
        "whole_s": round(whole_s, 2),
        "ratio": round(lines_s / whole_s, 3),
        "tokens": len(ids),
        "tokens_whole": len(before),
    }


def python_peak_mb(make_sampler, first: int = 4096) -> float:
    """Peak of Python allocations while a sampler starts an epoch and hands out ``first`` indices."""
    tracemalloc.start()
    sampler = make_sampler()
    sum(islice(iter(sampler), first))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def sampler_memory(windows: int) -> dict:
    ours = python_peak_mb(lambda: EpochShuffle(windows, seed=0, num_replicas=1, rank=0))
    wrapped = python_peak_mb(
        lambda: DistributedSamplerWrapper(
            RandomSampler(range(windows)), num_replicas=1, rank=0, shuffle=False
        )
    )
    return {
        "windows": windows,
        "epoch_shuffle_mb": round(ours, 1),
        "lightning_wrapper_mb": round(wrapped, 1),
        "ratio": round(ours / wrapped, 4),
    }


def main() -> None:
    if sys.argv[1:2] == ["--set-up"]:
        corpus, tokenizer, cache = sys.argv[2:5]
        print(json.dumps(set_up(Path(corpus), tokenizer, Path(cache))))
        return
    parser = bench_parser(__doc__)
    parser.add_argument("--mb", type=float, help="corpus size in MB (default 100; quick 2)")
    args = parser.parse_args()
    megabytes = args.mb or (2.0 if args.quick else 100.0)
    with tempfile.TemporaryDirectory(prefix="genlab_text_") as tmp:
        corpus = write_corpus(Path(tmp) / "corpus.txt", megabytes)
        text = corpus.read_text()
        result = {"megabytes": megabytes, "threads": torch.get_num_threads()}
        for tokenizer in ("char", "bpe"):
            result[f"setup_{tokenizer}"] = setups(corpus, tokenizer)
            print(tokenizer, result[f"setup_{tokenizer}"], flush=True)
        result["char_encoding"] = char_encoding(text)
        result["bpe_encoding"] = bpe_encoding(text[: len(text) // 5])  # learning on all of it takes minutes
        windows = result["setup_char"]["cold"]["train_tokens"] - 256
        result["sampler_memory"] = sampler_memory(min(windows, SAMPLER_WINDOWS))
    char, bpe = result["setup_char"], result["setup_bpe"]
    report(
        "text_data",
        args.quick,
        result,
        f"text set-up of {megabytes:g} MB: char {char['cold']['setup_s']} s cold -> {char['warm']['setup_s']} s "
        f"cached, BPE {bpe['cold']['setup_s']} s -> {bpe['warm']['setup_s']} s; peak RSS char "
        f"{char['cold']['peak_rss_mb']} MB; char encoding {result['char_encoding']['ratio']:.2f}x the time of "
        f"per-character; BPE by lines {result['bpe_encoding']['ratio']:.2f}x whole; sampler's Python memory "
        f"{result['sampler_memory']['ratio']:.4f}x Lightning's wrapper",
    )


if __name__ == "__main__":
    main()
