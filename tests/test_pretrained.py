"""Pretrained weights in: ``model.init_from`` loads a GPT-2-family checkpoint (Hugging Face layout) into genlab's
GPT, with its tokenizer, offline from a local folder. The folder is a small random ``GPT2LMHeadModel`` and a
byte-level BPE tokenizer, written here with ``save_pretrained`` exactly as the Hub's files are laid out."""

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import get_class, instantiate

from genlab.errors import ConfigError
from genlab.pipeline import fill_model_inputs, train
from tests.conftest import DATA, assert_user_error, compose_train, run_script
from tests.datasets import copy_task, write_tiny_gpt2
from tests.test_reliability import StopAfterFirstEpoch, assert_same_tensors, load

transformers = pytest.importorskip("transformers")
BOOK = DATA / "tinyshakespeare" / "input.txt"


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory) -> Path:
    return write_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"), BOOK.read_text()[:100_000])


def pretrained_run(folder: Path, tmp_path: Path, *extra: str):
    return compose_train(
        [
            "model=gpt",
            "data=text_file",
            f"data.path={BOOK}",
            "data.block_size=32",
            f"model.init_from={folder}",
            *extra,
        ],
        tmp_path,
    )


def test_init_from_gives_the_hf_models_logits_and_greedy_tokens(gpt2_folder, tmp_path):
    cfg = pretrained_run(gpt2_folder, tmp_path)
    get_class(cfg.model._target_).configure_run(cfg)
    assert cfg.model.net.n_layer == 2 and cfg.model.net.activation == "gelu_tanh" and cfg.model.net.bias
    datamodule = instantiate(cfg.data, _convert_="all")
    fill_model_inputs(cfg, datamodule)
    model = instantiate(cfg.model, _convert_="all")
    model.setup("fit")
    model.eval()
    hf = transformers.GPT2LMHeadModel.from_pretrained(gpt2_folder).eval()

    idx = torch.randint(0, cfg.model.net.vocab_size, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model.net(idx)[0], hf(idx).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)

    prompt = torch.tensor([datamodule.tokenizer.encode("ROMEO:")])
    with torch.no_grad():
        greedy = model.generate(prompt, 24, temperature=0.0)
        expected = hf.generate(prompt, max_new_tokens=24, do_sample=False, pad_token_id=0)
    assert greedy.tolist() == expected.tolist()


def test_fine_tuning_from_a_local_folder_lowers_the_validation_loss(gpt2_folder, tmp_path):
    steps, val_batches = 60, 8
    cfg = pretrained_run(
        gpt2_folder,
        tmp_path / "run",
        f"trainer.max_steps={steps}",
        "trainer.max_epochs=-1",
        f"trainer.val_check_interval={steps}",
        f"++trainer.limit_val_batches={val_batches}",
        "model.warmup_steps=5",
        "callbacks.progress_bar=null",
        "++callbacks.text_samples.max_new_tokens=8",
    )
    start = pretrained_run(gpt2_folder, tmp_path / "start")  # the loaded weights on the same val batches
    get_class(start.model._target_).configure_run(start)
    datamodule = instantiate(start.data, _convert_="all")
    fill_model_inputs(start, datamodule)
    model = instantiate(start.model, _convert_="all")
    model.setup("fit")
    model.eval()
    with torch.no_grad():
        batches = [b for _, b in zip(range(val_batches), datamodule.val_dataloader())]
        before = float(torch.stack([model.nll(x, y) for x, y in batches]).mean())

    after = train(cfg)["val/loss"]
    assert after < before - 0.5, (before, after)
    # the run's tokenizer is the pretrained one: sample.py decodes with it from the checkpoint alone
    out = tmp_path / "samples"
    run_script(
        "sample.py",
        [
            f"ckpt_path={tmp_path / 'run'}",
            "num_samples=1",
            "max_new_tokens=8",
            'prompt="ROMEO:"',
            f"hydra.run.dir={out}",
        ],
        tmp_path,
    )
    assert (out / "samples.txt").read_text().startswith("ROMEO:")


def test_init_from_a_missing_folder_is_one_line(tmp_path):
    proc = run_script(
        "train.py",
        ["model=gpt", "data=text_file", f"data.path={BOOK}", f"model.init_from={tmp_path / 'absent'}"],
        tmp_path,
        check=False,
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert_user_error(proc, "model.init_from=")


def test_init_from_refuses_a_block_size_beyond_the_models_positions(gpt2_folder, tmp_path):
    cfg = pretrained_run(gpt2_folder, tmp_path, "data.block_size=128")
    with pytest.raises(ConfigError, match="data.block_size=128 exceeds the 64 positions"):
        train(cfg)


@pytest.fixture(scope="module")
def copy_gpt2(tmp_path_factory) -> tuple[Path, list[str]]:
    """A tiny GPT-2 whose tokenizer was trained on a toy parallel corpus (target = source), and that corpus's
    overrides: a translation task the pretrained model can be fine-tuned on."""
    root = tmp_path_factory.mktemp("copy")
    task = copy_task(root / "corpus")
    folder = write_tiny_gpt2(root / "gpt2", (root / "corpus" / "train.tsv").read_text(), n_embd=64)
    return folder, ["model=gpt", *task, f"model.init_from={folder}"]


def test_fine_tuning_on_a_parallel_corpus_under_ddp_reports_bleu(copy_gpt2, tmp_path):
    folder, args = copy_gpt2
    run_script(
        "train.py",
        [
            *args,
            "trainer=ddp_cpu",
            "trainer.devices=2",
            "trainer.max_epochs=4",  # 31 steps an epoch on each of the 2 ranks
            "model.bleu_samples=41",
            "model.bleu_max_new_tokens=8",
            "callbacks.progress_bar=null",
            f"hydra.run.dir={tmp_path}",
        ],
        tmp_path,
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    protocol = metrics["protocol"]["bleu"]
    assert protocol["split"] == "val" and protocol["sentences"] == 41, protocol
    assert protocol["signature"].startswith("nrefs:1|"), protocol
    assert metrics["val/bleu"] > 5, "the pretrained model learnt to copy: <sep> and <eos> stand-ins work"
    # the run kept the pretrained vocabulary (GPT-2's <|endoftext|> ends each target), and saved it
    ours = json.loads(json.loads((tmp_path / "tokenizer.json").read_text())["tokenizer"])
    theirs = json.loads((folder / "tokenizer.json").read_text())
    assert ours["model"]["vocab"] == theirs["model"]["vocab"]


def test_resume_of_a_fine_tuning_run_reproduces_the_uninterrupted_run(copy_gpt2, tmp_path):
    _, args = copy_gpt2
    args = [*args, "trainer=cpu", "trainer.max_epochs=2", "+trainer.limit_train_batches=6"]
    args += ["+trainer.limit_val_batches=1", "callbacks.progress_bar=null", "callbacks.text_samples=null"]
    train(compose_train(args, tmp_path / "straight"))
    train(compose_train(args, tmp_path / "stopped"), extra_callbacks=[StopAfterFirstEpoch()])
    train(compose_train([*args, f"ckpt_path={tmp_path / 'stopped'}"], tmp_path / "resumed"))
    straight = load(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    resumed = load(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert straight["global_step"] == resumed["global_step"] == 12
    for key in ("state_dict", "optimizer_states", "lr_schedulers"):  # not the pretrained weights again
        assert_same_tensors(straight[key], resumed[key], key)
