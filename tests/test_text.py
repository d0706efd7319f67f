"""GPT language model: tokenizers, KV-cache generation, perplexity, real runs on text datamodules."""

import csv
import gzip
import json
import logging
import math
import os
import re
from collections import Counter
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from genlab.checkpoints import CONFIG_KEY, load_checkpoint, restore_data_state
from genlab.data.text import (
    BPETokenizer,
    CharTokenizer,
    ParallelDataModule,
    TextDocsDataModule,
    TextFileDataModule,
    TokenizedDataModule,
    read_text,
    tokenizer_from_json,
)
from genlab.errors import CheckpointError, ConfigError
from genlab.models.lm import LanguageModel
from genlab.nets.gpt import GPT, sample_next
from genlab.pipeline import train
from tests.conftest import SHARED, TINY_GPT, compose_train, run_script

SHAKESPEARE = SHARED / "data" / "tinyshakespeare" / "input.txt"


@pytest.fixture(scope="module")
def shakespeare() -> Path:
    if not SHAKESPEARE.is_file():
        pytest.skip(f"{SHAKESPEARE} not found: set GENLAB_SHARED")
    return SHAKESPEARE


@pytest.mark.parametrize("kind", [CharTokenizer, BPETokenizer])
def test_tokenizer_round_trip_and_json(kind):
    text = "To be, or not to be: that is the question.\nWhether 'tis nobler in the mind to suffer\n" * 20
    tok = kind.train(text, 300)
    sample = "Whether to be the question"
    assert tok.decode(tok.encode(sample)) == sample
    restored = tokenizer_from_json(tok.to_json())
    assert restored.encode(sample) == tok.encode(sample) and restored.vocab_size == tok.vocab_size


@pytest.mark.parametrize("kind", [CharTokenizer, BPETokenizer])
def test_a_split_encodes_to_the_same_ids_as_a_prompt(kind):
    text = "Wie schön, 東京 😀\r\nzweite\tZeile \x00 naïve \nthe sea \n\n  calm\u2028grey\n" * 30
    tok = kind.train(text, 300)
    assert (
        tok.encode_tensor(text).tolist() == tok.encode(text) and tok.encode_tensor(text).dtype == torch.int32
    )
    assert tok.decode(tok.encode(text)) == text
    if (
        kind is BPETokenizer
    ):  # line by line, as it learned: the learned " \n" token ends a line before a letter
        by_line = [i for line in text.splitlines(keepends=True) for i in tok.tokenizer.encode(line).ids]
        assert tok.encode(text) == by_line != tok.tokenizer.encode(text).ids
        assert tokenizer_from_json(tok.to_json()).encode(text) == by_line
        whole = tokenizer_from_json(json.dumps({"kind": "bpe", "tokenizer": tok.tokenizer.to_str()}))
        assert not whole.lines
        sentences = [
            "Wie schön, 東京 😀",
            "the sea \n calm",
            "",
            "zweite\tZeile \n",
        ]  # a pair's source and target
        for t in (tok, whole):  # in parallel, each as encode gives it (several lines: line by line)
            assert t.encode_many(sentences) == [t.encode(x) for x in sentences]
            assert t.encode_many(sentences[:1] + sentences[2:3]) == [
                t.encode(x) for x in ("Wie schön, 東京 😀", "")
            ]
    if kind is CharTokenizer:  # the vectorised path names the same characters as the per-character one
        with pytest.raises(ValueError, match="'Жил': not in the char tokenizer's vocabulary"):
            tok.encode_tensor("Жили")


def test_a_bpe_vocabulary_the_text_cannot_fill_is_reported(caplog):
    """data.vocab_size larger than the merges a text allows: the tokenizer says how many tokens it learned."""
    text = "To be, or not to be: that is the question.\n" * 20
    with caplog.at_level(logging.WARNING, logger="genlab.data.text"):
        tok = BPETokenizer.train(text, 50_000)
    assert 256 < tok.vocab_size < 50_000
    assert f"BPE tokenizer: {tok.vocab_size} tokens, fewer than data.vocab_size=50000" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="genlab.data.text"):
        assert BPETokenizer.train(text, 280).vocab_size == 280
    assert "BPE tokenizer" not in caplog.text


def test_text_datamodules_tensorise_once(shakespeare):
    dm = TextFileDataModule(path=str(shakespeare), block_size=64, batch_size=4)
    dm.setup()
    assert dm.vocab_size == 65 and len(dm.train_tokens) + len(dm.val_tokens) == 1_115_394
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 64) and torch.equal(x[:, 1:], y[:, :-1])
    docs = TextDocsDataModule(block_size=32)
    assert docs.vocab_size > 50 and len(docs.train_tokens) > 100_000


def test_text_file_test_split_is_the_end_of_the_text_disjoint_from_val(shakespeare):
    dm = TextFileDataModule(path=str(shakespeare), block_size=64, batch_size=4, test_fraction=0.1)
    assert dm.has_test_split
    dm.setup()
    text = shakespeare.read_text(encoding="utf-8")
    train, val, test = (
        dm.tokenizer.decode(t.tolist()) for t in (dm.train_tokens, dm.val_tokens, dm.test_tokens)
    )
    assert train + val + test == text, "contiguous train | val | test, no character in two splits"
    assert test == text[int(len(text) * 0.9) :] and abs(len(val) - 0.1 * len(text)) < 2
    x, _ = next(iter(dm.test_dataloader()))
    assert torch.equal(x[0], dm.test_tokens[:64].long())
    prompt, reference = dm.bleu_pairs(2, "test")[1]
    assert dm.tokenizer.decode(prompt) + reference == test[64:128]
    assert dm.chars_per_token("test") == dm.chars_per_token("val") == 1.0  # char tokenizer
    no_test = TextFileDataModule(path=str(shakespeare), block_size=64)
    assert not no_test.has_test_split
    with pytest.raises(ConfigError, match="data=text_file has no test split: set data.test_fraction"):
        no_test.test_dataloader()


def test_text_datamodules_declare_model_inputs_eos_and_split_ids(tmp_path):
    (tmp_path / "story.txt").write_text("It was a dark and stormy night; the rain fell in torrents. " * 40)
    for split in ("train", "val"):
        (tmp_path / f"{split}.tsv").write_text("ein Hund\ta dog\nzwei Katzen\ttwo cats\n" * 20)
    path = str(tmp_path / "story.txt")
    story = TextFileDataModule(path=path, block_size=16)
    parallel = ParallelDataModule(root=str(tmp_path), vocab_size=300, block_size=16)
    for dm in (story, TextDocsDataModule(block_size=16), parallel):
        assert isinstance(dm, TokenizedDataModule) and dm.modality == "text"
        assert dm.model_inputs() == {"vocab_size": dm.tokenizer.vocab_size} and dm.vocab_size > 10
        assert re.fullmatch(rf"{dm.name}-val-[0-9a-f]{{8}}", dm.split_id("val"))
        assert dm.eos_id == (dm.special("<eos>") if dm is parallel else None)
        assert dm.references == (dm is parallel)
    assert story.split_id("val") == TextFileDataModule(path=path, block_size=16).split_id("val")
    other = TextFileDataModule(path=path, block_size=16, val_fraction=0.2)
    assert other.split_id("val") != story.split_id("val") != story.split_id("train")
    with pytest.raises(ConfigError, match="data=parallel has no test split"):
        parallel.split_id("test")


class KeepDataModule(pl.Callback):
    def on_test_end(self, trainer, pl_module):
        self.datamodule = trainer.datamodule


def test_gpt_test_metrics_are_measured_on_the_test_split(tmp_path):
    overrides = ["model=gpt", "data=text_docs", "data.tokenizer=bpe", "data.vocab_size=300", *TINY_GPT]
    overrides += ["data.test_fraction=0.1", "debug=fast_dev_run", "test=true"]
    keep = KeepDataModule()
    metrics = train(compose_train(overrides, tmp_path), extra_callbacks=[keep])
    dm = keep.datamodule
    assert dm.chars_per_token("test") != dm.chars_per_token("val")
    for split in ("val", "test"):
        bpc = metrics[f"{split}/loss"] / (math.log(2) * dm.chars_per_token(split))
        assert metrics[f"{split}/bpc"] == pytest.approx(bpc, rel=1e-5)


def test_a_text_in_an_8_bit_encoding_reads_with_data_encoding(tmp_path):
    """A Windows text (cp1252: curly quotes at bytes 0x93/0x94) is refused as UTF-8 with the encoding to set,
    and read with it; so is a Latin-1 one. An unknown encoding, and a binary file under an 8-bit encoding
    (which decodes any bytes), are one line each."""
    text = "\u201cCa\u00e7a,\u201d dit-il \u2014 \u00e0 l\u2019\u00e9t\u00e9.\n" * 40
    windows = tmp_path / "windows.txt"
    windows.write_bytes(text.encode("cp1252"))
    with pytest.raises(ValueError, match=r"windows.txt is not valid UTF-8 .*set data.encoding=cp1252 "):
        TextFileDataModule(path=str(windows), block_size=8).setup()
    dm = TextFileDataModule(path=str(windows), block_size=8, encoding="cp1252")
    dm.setup()
    assert dm.tokenizer.decode(dm.train_tokens[:36].tolist()) == text[:36]
    latin = tmp_path / "latin.txt"
    latin.write_bytes("na\u00efve caf\u00e9\n".encode("latin-1") * 40)
    dm = TextFileDataModule(path=str(latin), block_size=8, encoding="latin-1")
    dm.setup()
    assert "\u00ef" in dm.tokenizer.decode(list(range(dm.tokenizer.vocab_size)))
    with pytest.raises(ValueError, match=r"data.encoding=latin-9x is no encoding Python knows"):
        TextFileDataModule(path=str(latin), encoding="latin-9x")
    late = tmp_path / "late.txt"
    late.write_bytes(b"a" * 100_000 + "caf\u00e9!".encode("latin-1"))  # past the reader's first chunk
    with pytest.raises(
        ValueError, match=r"late.txt is not valid UTF-8 \(invalid continuation byte at byte 100003\)"
    ):
        TextFileDataModule(path=str(late)).setup()
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ValueError, match=r"model.bin is a binary file, not text"):
        TextFileDataModule(path=str(binary), encoding="latin-1").setup()


def test_bad_text_file_messages(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 cr\xe8me".encode("latin1"))
    with pytest.raises(ValueError, match="not valid UTF-8 .*set data.encoding=latin-1 .*iconv -f latin-1"):
        TextFileDataModule(path=str(bad)).setup()
    with pytest.raises(FileNotFoundError, match="data.path=.*does not exist"):
        TextFileDataModule(path=str(tmp_path / "missing.txt")).setup()
    (tmp_path / "pictures").mkdir()
    (tmp_path / "pictures" / "cover.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(FileNotFoundError, match="pictures holds no text files"):
        TextFileDataModule(path=str(tmp_path / "pictures")).setup()
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n")
    with pytest.raises(ValueError, match="empty.txt holds no text"):
        TextFileDataModule(path=str(empty)).setup()
    windows = tmp_path / "notepad.txt"
    windows.write_bytes(("\ufeff" + "To be, or not to be\r\n" * 50).encode())  # byte-order mark, CRLF
    dm = TextFileDataModule(path=str(windows), block_size=8)
    dm.setup()
    assert "\ufeff" not in dm.tokenizer.decode(list(range(dm.tokenizer.vocab_size))), "a BOM is no character"


def test_text_in_utf16_utf32_or_gzip_under_any_name_reads_as_text(tmp_path):
    text = "Wie schön, 東京 😀\nzweite Zeile\n"
    for encoding in ("utf-16", "utf-16-be", "utf-32"):  # Notepad's "Unicode" is utf-16 with its mark
        data = ("\ufeff" if encoding.endswith("be") else "") + text
        (tmp_path / f"{encoding}.txt").write_bytes(data.replace("\n", "\r\n").encode(encoding))
        assert read_text(tmp_path / f"{encoding}.txt") == text, encoding
    (tmp_path / "download").write_bytes(gzip.compress(text.encode()))  # gzipped, though not named .gz
    assert read_text(tmp_path / "download") == text


@pytest.mark.parametrize(
    "name, data, message",
    [
        (
            "book.pdf",
            b"%PDF-1.7\n%\xe2\xe3\n",
            r"is a PDF document, not plain text: .*`pdftotext book.pdf book.txt`",
        ),
        ("book.docx", b"PK\x03\x04\x14\x00", r"is a ZIP archive .*`pandoc book.docx -t plain -o book.txt`"),
        ("book.txt", bytes(range(256)) * 4, "is a binary file, not text"),
        ("book.txt.gz", gzip.compress(os.urandom(4000))[:2000], "is a damaged gzip file"),
        (
            "train-00000.parquet",
            b"PAR1\x15\x04" + bytes(64),
            r"is a Parquet table .*read_parquet\('train-00000.parquet'\).to_json\('train-00000.jsonl'",
        ),
        ("corpus.jsonl", b'{"text": "a"}\n{"text": b}\n', r"line 2 is not JSON \(Expecting value\)"),
        ("corpus.jsonl", b'{"text": "a"}\n[1, 2]\n', r"line 2 is list, not an object with a text field"),
        (
            "rows.json",
            b'[{"text": "a"}, {"body": "b", "n": 3}]',
            r"record 2 has no text field 'text': .*one of body\.",
        ),
    ],
)
def test_documents_and_binary_files_are_refused_with_the_fix(tmp_path, name, data, message):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ValueError, match=message):
        TextFileDataModule(path=str(tmp_path / name)).setup()


def test_a_folder_of_chapters_is_one_text_in_path_order(tmp_path):
    """data.path=<folder>: its text files (subfolders too, gzipped too; hidden files and others skipped) in
    path order, a blank line between them; validation is the end of the last chapters, as for one file."""
    book = tmp_path / "book"
    (book / "part2").mkdir(parents=True)
    (book / ".git").mkdir()
    (book / "01.txt").write_text("First chapter.\n")
    with gzip.open(book / "02.md.gz", "wt", encoding="utf-8") as f:
        f.write("Second, zipped.")
    (book / "part2" / "03.txt").write_text("\ufeffThird, in a subfolder.\n\n", encoding="utf-8")
    (book / "part2" / "04").write_text("Fourth, as `split` names it.")
    (book / ".git" / "HEAD.txt").write_text("hidden")
    (book / "cover.jpg").write_bytes(b"\xff\xd8")
    dm = TextFileDataModule(path=str(book))
    assert (
        dm.load_text()
        == "First chapter.\n\nSecond, zipped.\n\nThird, in a subfolder.\n\nFourth, as `split` names it."
    )
    single = tmp_path / "one.txt"
    single.write_text("Alone.\n")
    assert TextFileDataModule(path=str(single)).load_text() == "Alone.\n", "one file: its text as it is"


def test_json_lines_records_are_documents(tmp_path):
    """A JSON Lines corpus (records of a text field and others, blank lines skipped), gzipped or not, a JSON list
    of records or of strings, alone or in a folder: each record's text is a document, a blank line between."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    records = [{"id": 1, "text": "Premier doc.\n", "lang": "fr"}, {"id": 2, "text": "Second, 東京 😀"}]
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    (corpus / "a.jsonl").write_text(lines[0] + "\n\n" + lines[1] + "\n", encoding="utf-8")
    assert TextFileDataModule(path=str(corpus / "a.jsonl")).load_text() == "Premier doc.\n\nSecond, 東京 😀"
    with gzip.open(corpus / "b.ndjson.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"content": "Troisième"}) + "\n")
    (corpus / "c.json").write_text(json.dumps([{"content": "Quatrième"}, "Cinquième"]))
    (corpus / "d.txt").write_text("Sixième, en texte.\n")
    folder = TextFileDataModule(path=str(corpus), text_field="content")
    with pytest.raises(
        ValueError, match=r"a.jsonl: line 1 has no text field 'content': .*one of text, lang\."
    ):
        folder.load_text()
    (corpus / "a.jsonl").unlink()
    assert folder.load_text() == "Troisième\n\nQuatrième\n\nCinquième\n\nSixième, en texte."


@pytest.mark.parametrize("tokenizer", ["char", "bpe"])
def test_the_token_cache_keeps_a_texts_tokenizer_and_tokens_until_the_text_changes(
    tokenizer, tmp_path, monkeypatch, caplog
):
    book, cache = tmp_path / "book.txt", tmp_path / "tokens"
    book.write_text(SHAKESPEARE.read_text()[:20_000])
    options = {
        "path": str(book),
        "tokenizer": tokenizer,
        "vocab_size": 300,
        "block_size": 16,
        "token_cache": str(cache),
    }
    first = TextFileDataModule(**options)
    first.setup()
    assert len(list(cache.glob("tokenizer-*.json"))) == 1 and len(list(cache.glob("tokens-*.npy"))) == 2

    def not_again(*args):
        raise AssertionError("learned or encoded again despite the cache")

    kind = type(first.tokenizer)
    monkeypatch.setattr(kind, "encode", not_again)
    monkeypatch.setattr(kind, "train", not_again)
    again = TextFileDataModule(**options)
    again.setup()
    assert torch.equal(again.train_tokens, first.train_tokens) and torch.equal(
        again.val_tokens, first.val_tokens
    )
    assert again.tokenizer.to_json() == first.tokenizer.to_json() and again.split_id("val") == first.split_id(
        "val"
    )

    monkeypatch.undo()
    next(cache.glob("tokens-*.npy")).write_bytes(b"damaged")
    with caplog.at_level(logging.WARNING):
        TextFileDataModule(**options).setup()
    assert "unreadable" in caplog.text
    book.write_text(SHAKESPEARE.read_text()[20_000:40_000])  # another text: its own entries
    TextFileDataModule(**options).setup()
    assert len(list(cache.glob("tokens-*.npy"))) == 4


def test_a_folder_of_chapters_trains_as_typed(tmp_path):
    chapters = tmp_path / "chapters"
    chapters.mkdir()
    lines = SHAKESPEARE.read_text().splitlines(keepends=True)[:3000]
    for i in range(3):
        (chapters / f"ch_a{'abc'[i]}").write_text("".join(lines[i * 1000 : (i + 1) * 1000]))
    run = tmp_path / "run"
    args = ["model=gpt", "data=text_file", f"data.path={chapters}", *TINY_GPT, "trainer.max_steps=4"]
    run_script("train.py", [*args, "callbacks.progress_bar=null", f"hydra.run.dir={run}"], tmp_path)
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "tokenizer.json").is_file()


def test_text_too_short_for_the_block_names_the_split_and_the_fix(tmp_path):
    poem = tmp_path / "poem.txt"
    poem.write_text("a" * 99 + "b")  # 90 training and 10 validation characters
    message = r"The val split .* 10 tokens.*data.block_size<=9, or a larger data.val_fraction \(now 0.1\)\."
    for loader in ("train_dataloader", "val_dataloader"):  # the shortest split first: the fix fits all
        with pytest.raises(ValueError, match=message):
            getattr(TextFileDataModule(path=str(poem), block_size=32), loader)()
    dm = TextFileDataModule(path=str(poem), block_size=9, test_fraction=0.05)
    with pytest.raises(
        ValueError, match=r"The test split .* 5 tokens.*block_size<=4, or a larger data.test_fraction"
    ):
        dm.train_dataloader()
    dm = TextFileDataModule(path=str(poem), block_size=9)
    assert len(dm.train_dataloader().dataset) == 90 - 9 and len(dm.val_dataloader().dataset) == 1


def test_kv_cache_generation_matches_full_recompute():
    torch.manual_seed(0)
    net = GPT(50, block_size=24, n_layer=2, n_head=2, n_embd=32, dropout=0.0).eval()
    prompt = torch.randint(0, 50, (3, 5))
    cached = net.generate(prompt, 30, temperature=0, use_cache=True)  # runs past block_size too
    plain = net.generate(prompt, 30, temperature=0, use_cache=False)
    assert torch.equal(cached, plain)
    full, _ = net(cached[:, :20])
    _, cache = net(cached[:, :12])
    incremental, _ = net(cached[:, 12:20], cache)
    assert torch.allclose(full[:, 12:], incremental, atol=1e-5)


def test_top_k_and_top_p_filtering():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))

    def draws(**kw) -> set[int]:
        return {
            sample_next(logits, generator=torch.Generator().manual_seed(s), **kw).item() for s in range(200)
        }

    assert draws(top_k=2) == {0, 1}
    assert draws(top_p=0.7) == {0, 1}  # 0.5 + 0.3 reaches 0.7
    assert draws(top_p=0.4) == {0}
    assert sample_next(logits, temperature=0).item() == 0


def test_perplexity_is_exp_of_mean_token_nll():
    class Fixed(torch.nn.Module):  # uniform over 4 tokens, except token 0 gets probability 0.7
        def forward(self, idx, cache=None):
            probs = torch.tensor([0.7, 0.1, 0.1, 0.1])
            return probs.log().expand(*idx.shape, 4), None

    model = LanguageModel(Fixed())
    x = torch.zeros(2, 3, dtype=torch.long)
    y = torch.tensor([[0, 0, 1], [0, 2, 3]])  # NLL: 3 x -log 0.7 and 3 x -log 0.1
    expected = (3 * -math.log(0.7) + 3 * -math.log(0.1)) / 6
    assert model.nll(x, y).item() == pytest.approx(expected, rel=1e-6)
    model.val_nll.update(model.nll(x[:1], y[:1]), weight=3)
    model.val_nll.update(model.nll(x[1:], y[1:]), weight=3)
    assert math.exp(model.val_nll.compute()) == pytest.approx(math.exp(expected), rel=1e-6)


@pytest.mark.parametrize("data", ["text_docs", "text_file"])
def test_fast_dev_run_gpt(data, shakespeare, tmp_path):
    extra = [f"data.path={shakespeare}"] if data == "text_file" else []
    metrics = train(
        compose_train(["model=gpt", f"data={data}", *extra, *TINY_GPT, "debug=fast_dev_run"], tmp_path)
    )
    assert math.isfinite(metrics["val/loss"]) and "val/perplexity" in metrics
    assert (tmp_path / "tokenizer.json").is_file() and list((tmp_path / "samples").glob("text_epoch_*.txt"))


def unigram_entropy(tokens: torch.Tensor) -> float:
    counts = torch.tensor(list(Counter(tokens.tolist()).values()), dtype=torch.float64)
    p = counts / counts.sum()
    return float(-(p * p.log()).sum())


@pytest.mark.slow
def test_short_shakespeare_run_beats_unigram_entropy(shakespeare, tmp_path):
    cfg = compose_train(
        [
            "experiment=gpt_shakespeare_char_cpu",
            f"data.path={shakespeare}",
            "trainer.max_steps=240",
            "trainer.val_check_interval=120",
            "trainer.limit_val_batches=20",
            "callbacks.progress_bar=null",
            "callbacks.text_samples.max_new_tokens=50",
        ],
        tmp_path,
    )
    metrics = train(cfg)
    dm = TextFileDataModule(path=str(shakespeare), block_size=64)
    dm.setup()
    entropy = unigram_entropy(dm.train_tokens)
    with open(tmp_path / "csv" / "metrics.csv") as f:
        losses = [float(r["val/loss"]) for r in csv.DictReader(f) if r.get("val/loss")]
    assert len(losses) == 2 and losses[-1] < losses[0]
    assert metrics["val/loss"] < entropy - 0.5, (metrics["val/loss"], entropy)
    assert metrics["val/perplexity"] == pytest.approx(math.exp(metrics["val/loss"]), rel=1e-5)
    assert metrics["val/bpc"] == pytest.approx(metrics["val/loss"] / math.log(2), rel=1e-5)


@pytest.mark.slow
def test_gpt_bf16_mixed(tmp_path):
    quick = [
        "model=gpt",
        "data=text_docs",
        *TINY_GPT,
        "trainer.max_steps=6",
        "+trainer.limit_val_batches=2",
        "trainer.val_check_interval=3",
        "callbacks.progress_bar=null",
        "callbacks.text_samples.max_new_tokens=8",
    ]
    metrics = train(compose_train([*quick, "trainer=cpu", "trainer.precision=bf16-mixed"], tmp_path))
    assert math.isfinite(metrics["val/loss"])


def test_bleu_equals_sacrebleu():
    import sacrebleu

    from genlab.models.sacrebleu_metrics import sacre_bleu

    hypotheses = ["A man is riding a bike down the street .", "Two dogs play in the snow", "A child eats."]
    references = [
        "A man rides a bicycle down the street.",
        "Two dogs are playing in the snow.",
        "A kid is eating.",
    ]
    ours = sacre_bleu()(hypotheses, references).item()
    reference = sacrebleu.corpus_bleu(hypotheses, [references]).score
    assert reference > 5 and ours == pytest.approx(reference, abs=1e-4)


@pytest.fixture(scope="module")
def multi30k() -> Path:
    root = SHARED / "data" / "multi30k"
    if not root.is_dir():
        pytest.skip(f"{root} not found: set GENLAB_SHARED")
    return root


def test_parallel_corpus_masks_source_and_checks_alignment(multi30k, tmp_path):
    from genlab.data.text import ParallelDataModule

    dm = ParallelDataModule(root=str(multi30k), block_size=64, vocab_size=2000)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set)) == (29000, 1014)
    x, y = dm.train_set[0]
    sep = dm.special("<sep>")
    src_len = int((x == sep).nonzero()[0])
    assert (y[:src_len] == -100).all() and (y[src_len:] != -100).any() and dm.eos_id in y.tolist()
    (tmp_path / "train.de").write_text("eins\nzwei\n")
    (tmp_path / "train.en").write_text("one\n")
    with pytest.raises(ValueError, match="train.de has 2 lines but train.en has 1"):
        ParallelDataModule(root=str(tmp_path)).setup()
    (tmp_path / "train.en").write_bytes("one\ntwo caf\xe9\n".encode("latin1"))
    with pytest.raises(ValueError, match="train.en is not valid UTF-8.*iconv"):
        ParallelDataModule(root=str(tmp_path)).setup()
    tsv = tmp_path / "tsv"
    tsv.mkdir()
    (tsv / "train.tsv").write_text("eins\tone\r\n\r\nzwei\ttwo\r\nno tab\r\n")  # blank lines are skipped
    with pytest.raises(ValueError, match=r"train.tsv: lines \[4\] do not hold exactly one tab"):
        ParallelDataModule(root=str(tsv)).setup()


def test_parallel_corpus_reads_the_multi30k_test_split(multi30k):
    from genlab.data.text import ParallelDataModule

    dm = ParallelDataModule(root=str(multi30k), block_size=64, vocab_size=500, test_split="test_2016_flickr")
    assert dm.has_test_split
    dm.setup()
    assert len(dm.test_set) == 1000
    with gzip.open(multi30k / "test_2016_flickr.en.gz", "rt", encoding="utf-8") as f:
        references = f.read().split("\n")[:3]
    assert [r for _, r in dm.bleu_pairs(3, "test")] == references
    assert [r for _, r in dm.bleu_pairs(3, "val")] != references
    x, y = next(iter(dm.test_dataloader()))  # cut to the batch's longest pair
    full = dm.test_set[:64][0]
    assert x.shape[0] == 64 and x.shape[1] <= 64 and torch.equal(x, full[:, : x.shape[1]])
    assert (full[:, x.shape[1] :] == dm.special("<pad>")).all()
    missing = ParallelDataModule(root=str(multi30k), test_split="test_2017_mscoco")
    assert not missing.has_test_split
    with pytest.raises(ConfigError, match="data=parallel has no test split.*data.test_split"):
        missing.test_dataloader()


def test_a_corpus_in_other_languages_or_split_names_gets_the_option_to_set(tmp_path):
    """A user's corpus (fairseq-style dev split, French-English): the error names what the folder holds."""
    from genlab.data.text import ParallelDataModule

    for split in ("train", "dev", "test"):
        (tmp_path / f"{split}.fr").write_text("le chat\nun chien\n")
        (tmp_path / f"{split}.en").write_text("the cat\na dog\n")
    (tmp_path / "notes.txt").write_text("not a language")
    with pytest.raises(FileNotFoundError, match=r"its files are in en, fr: set data.source and data.target"):
        ParallelDataModule(root=str(tmp_path)).setup()
    french = {"root": str(tmp_path), "source": "fr", "target": "en", "vocab_size": 300}
    with pytest.raises(
        FileNotFoundError, match=r"No val split .* holds the split dev: set data.val_split=dev\."
    ):
        ParallelDataModule(**french).setup()  # not train nor test: a validation split is held out from them
    untested = ParallelDataModule(**french, val_split="dev", test_split="test_2016_flickr")
    with pytest.raises(ConfigError, match=r"holds the split test: set data.test_split=test, or evaluate"):
        untested.test_dataloader()
    assert untested.missing_test_split() == "it holds the split test: set data.test_split=test"
    dm = ParallelDataModule(**french, val_split="dev", test_split="test")
    dm.setup()
    assert len(dm.dataset("val")) == len(dm.dataset("test")) == 2


def test_one_file_of_pairs_is_carved_into_seeded_splits(tmp_path, caplog):
    """data.root=<pairs.tsv>: one source<TAB>target file (as Tatoeba's, trimmed to two columns) is split by the
    fractions, the same way for the same seed; a header line naming the columns is skipped; the three-column
    export gets the command that trims it."""
    from genlab.data.text import ParallelDataModule, read_pairs

    pairs = [(f"source {i}", f"target {i}") for i in range(100)]
    header = "De\tEN\n"  # the columns' names, as pandas writes them: not a pair
    (tmp_path / "pairs.tsv").write_text(header + "".join(f"{a}\t{b}\n" for a, b in pairs))
    one = {"root": str(tmp_path / "pairs.tsv"), "vocab_size": 300, "block_size": 16}
    dm = ParallelDataModule(**one, val_fraction=0.1, test_fraction=0.05)
    with caplog.at_level(logging.INFO, logger="genlab.data.text"):
        dm.setup()
    assert "pairs.tsv: line 1 (De | EN) names the columns: skipped as a header" in caplog.text
    sizes = [len(dm.dataset(split)) for split in ("train", "val", "test")]
    assert sizes == [85, 10, 5]
    assert read_pairs(tmp_path / "pairs.tsv") == [("De", "EN"), *pairs], "other languages' codes are a pair"
    (tmp_path / "named.tsv").write_text("source\ttarget\n\t\n" + header)
    assert read_pairs(tmp_path / "named.tsv", ("fr", "en")) == [("", ""), ("De", "EN")]
    val = [reference for _, reference in dm.bleu_pairs(None, "val")]
    test = [reference for _, reference in dm.bleu_pairs(None, "test")]
    assert not set(val) & set(test) and set(val) <= {b for _, b in pairs}
    again = ParallelDataModule(**one, val_fraction=0.1, test_fraction=0.05)
    again.setup()
    assert [r for _, r in again.bleu_pairs(None, "val")] == val, "the same seed carves the same split"
    with pytest.raises(ConfigError, match="set data.test_fraction .* to carve one from"):
        ParallelDataModule(**one).test_dataloader()
    (tmp_path / "fra.txt").write_text(
        "Go.\tVa !\tCC-BY 2.0 (France) Attribution: tatoeba.org #2877272\n" * 20
    )
    with pytest.raises(ValueError, match=r"hold 3 tab-separated fields.*`cut -f1,2 fra.txt > pairs.tsv`"):
        ParallelDataModule(root=str(tmp_path / "fra.txt")).setup()


def test_trimmed_batches_keep_the_loss_and_length_grouping_cuts_padding(multi30k):
    from genlab.data.text import ParallelDataModule, trim_padding

    dm = ParallelDataModule(root=str(multi30k), block_size=96, vocab_size=1000, batch_size=32)
    rows = [dm.dataset("train")[i] for i in range(32)]
    x, y = trim_padding(rows)
    full_x, full_y = torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])
    assert x.shape[1] % 8 == 0 and x.shape[1] < 96 and (full_y[:, x.shape[1] :] == -100).all()
    torch.manual_seed(0)
    model = LanguageModel(net=GPT(dm.vocab_size, 96, n_layer=2, n_head=2, n_embd=32, dropout=0.0))
    assert model.nll(x, y).item() == pytest.approx(model.nll(full_x, full_y).item(), rel=1e-5)

    def widths(group: bool, epoch: int = 0) -> tuple[list[int], list[int]]:
        dm.group_by_length = group
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return [b[0].shape[1] for b in loader], list(loader.sampler)

    plain, plain_order = widths(False)
    grouped, order = widths(True)
    assert sorted(order) == sorted(plain_order) == list(range(29000))  # every pair once an epoch
    assert widths(True)[1] == order and widths(True, epoch=1)[1] != order  # fixed by (seed, epoch)
    assert sum(grouped) < 0.7 * sum(plain) < 0.7 * 96 * len(plain)  # tokens computed on, padding included


def test_fast_dev_run_gpt_parallel_with_bleu(multi30k, tmp_path):
    overrides = ["model=gpt", "data=parallel", f"data.root={multi30k}", "data.vocab_size=500", *TINY_GPT]
    overrides += ["data.group_by_length=true"]
    overrides += ["debug=fast_dev_run", "model.bleu_samples=4", "model.bleu_max_new_tokens=8", "test=true"]
    metrics = train(compose_train(overrides, tmp_path))
    assert 0 <= metrics["val/bleu"] <= 100 and math.isfinite(metrics["val/loss"])
    assert 0 <= metrics["test/bleu"] <= 100 and math.isfinite(metrics["test/loss"])


@pytest.mark.slow
def test_sample_script_generates_text_from_checkpoint(tmp_path):
    run = tmp_path / "run"
    quick = ["model=gpt", "data=text_docs", *TINY_GPT, "trainer=cpu", "trainer.max_steps=4"]
    train(compose_train([*quick, "+trainer.limit_val_batches=1", "callbacks.progress_bar=null"], run))
    checkpoint = load_checkpoint(run / "checkpoints" / "last.ckpt")
    tokenizer = TextDocsDataModule.tokenizer_from_checkpoint(checkpoint)
    assert tokenizer.to_json() == (run / "tokenizer.json").read_text()
    with pytest.raises(CheckpointError, match="holds no tokenizer: was it trained on a genlab text"):
        TextFileDataModule.tokenizer_from_checkpoint(checkpoint)  # saved under the class's own name
    out = tmp_path / "samples"
    args = [f"ckpt_path={run}", "num_samples=3", "max_new_tokens=20", "prompt=The", f"hydra.run.dir={out}"]
    run_script("sample.py", args, tmp_path)
    texts = (out / "samples.txt").read_text().split("\n\n")
    assert len(texts) >= 3 and all(t.startswith("The") for t in texts[:3])


def test_a_resumed_run_takes_its_tokenizer_over_only_into_data_of_the_same_kind(tmp_path):
    """What a checkpoint keeps of its data (the tokenizer) reaches a datamodule of another class that declares
    the same kind of state (text_file -> text_docs), before any text is read; one of another kind is refused."""
    book = tmp_path / "book.txt"
    book.write_text("A small book of plain words.\n" * 50)
    trained = TextFileDataModule(path=str(book), block_size=8, batch_size=2)
    trained.setup()
    checkpoint = {  # the two entries Lightning and genlab store in every checkpoint
        CONFIG_KEY: {"data": {"_target_": "genlab.data.text.TextFileDataModule"}},
        "TextFileDataModule": trained.state_dict(),
    }
    docs = TextDocsDataModule(block_size=8, batch_size=2)
    restore_data_state("run.ckpt", docs, checkpoint)
    assert docs.tokenizer.to_json() == trained.tokenizer.to_json()
    with pytest.raises(
        ConfigError, match="trained on data=text_file, whose text tokenizer the model is built on"
    ):
        restore_data_state("run.ckpt", ParallelDataModule(root=str(tmp_path)), checkpoint)
