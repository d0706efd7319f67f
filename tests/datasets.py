"""Small datasets written in each loader's on-disk layout (no CelebA/CIFAR-10 copy is available)."""

import gzip
import pickle
import random
from pathlib import Path

import numpy as np
from PIL import Image


def write_idx(folder, prefix, images):
    folder.mkdir(parents=True, exist_ok=True)
    header = np.array([2051, len(images), *images.shape[1:]], dtype=">i4").tobytes()
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(header + images.astype(np.uint8).tobytes())


def write_idx_labels(folder, prefix, labels):
    header = np.array([2049, len(labels)], dtype=">i4").tobytes()
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(header + np.asarray(labels, dtype=np.uint8).tobytes())


def write_fashion_mnist(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 20), ("t10k", 6)):
        write_idx(root / "FashionMNIST" / "raw", prefix, rng.integers(0, 256, (n, 28, 28)))
        write_idx_labels(root / "FashionMNIST" / "raw", prefix, rng.integers(0, 10, n))
    return root


def write_cifar10(root: Path, per_batch: int = 4) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump(
                {
                    "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                    "labels": rng.integers(0, 10, per_batch).tolist(),
                },
                f,
            )
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch}, f)
    return root


def write_celeba(folder, n=12):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, n + 1):
        blocks = rng.choice(np.array([0, 255], dtype=np.uint8), (28, 23, 3))  # coarse: survives resizing
        pixels = blocks.repeat(8, 0).repeat(8, 1)[:218, :178]
        Image.fromarray(pixels).save(folder / f"{i:06d}.jpg")


def write_image_folder(root: Path, per_folder: int = 3) -> Path:
    for sub in ("a", "b/c"):
        (root / sub).mkdir(parents=True)
        for i in range(per_folder):
            Image.new("RGB", (50, 40), (255 * (i % 2), 10, 200)).save(root / sub / f"{i}.png")
    return root


def copy_task(root: Path) -> list[str]:
    """Overrides of a tiny GPT on :func:`write_copy_corpus` (written to ``root``): learns it in a few epochs."""
    return [
        "data=parallel",
        f"data.root={write_copy_corpus(root)}",
        "data.vocab_size=300",
        "data.block_size=24",
        "data.batch_size=32",
        "model.net.n_embd=64",
        "model.net.dropout=0",
        "model.lr=3e-3",
        "model.warmup_steps=20",
    ]


def write_copy_corpus(root: Path) -> Path:
    """A toy parallel corpus (target = source) a tiny GPT learns in seconds: BLEU well above 0."""
    rng = random.Random(0)
    words = [
        "red",
        "blue",
        "green",
        "cat",
        "dog",
        "bird",
        "runs",
        "sits",
        "jumps",
        "big",
        "small",
        "old",
        "young",
        "tree",
        "house",
        "river",
    ]
    root.mkdir(parents=True)
    for split, n in [("train", 2000), ("val", 41), ("test_2016_flickr", 40)]:  # 41: ranks get 21 and 20
        lines = [" ".join(rng.choice(words) for _ in range(5)) for _ in range(n)]
        (root / f"{split}.tsv").write_text("".join(f"{s}\t{s}\n" for s in lines))
    return root


def write_tiny_gpt2(folder: Path, text: str, n_positions: int = 64, n_embd: int = 32) -> Path:
    """A small random GPT-2 (``GPT2LMHeadModel``, GPT-2's defaults: tanh GELU, biases, tied head) and a byte-level
    BPE tokenizer trained on ``text`` with GPT-2's ``<|endoftext|>``, written by ``save_pretrained`` in the Hub's layout."""
    import torch
    import transformers

    from genlab.data.text import BPETokenizer

    tokenizer = BPETokenizer.train(text, 400, specials=("<|endoftext|>",))
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer.tokenizer).save_pretrained(folder)
    torch.manual_seed(0)
    end = tokenizer.tokenizer.token_to_id("<|endoftext|>")
    config = transformers.GPT2Config(
        vocab_size=tokenizer.vocab_size,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=2,
        n_head=2,
        bos_token_id=end,
        eos_token_id=end,
    )
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    return folder
