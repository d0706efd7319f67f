"""Pretrained weights in: ``model.init_from`` loads a GPT-2-family checkpoint (Hugging Face layout) into genlab's
GPT, with its tokenizer, offline from a local folder. The folder is a small random ``GPT2LMHeadModel`` and a
byte-level BPE tokenizer, written here with ``save_pretrained`` exactly as the Hub's files are laid out."""

from pathlib import Path

import pytest
import torch
from hydra.utils import get_class, instantiate

from genlab.errors import ConfigError
from genlab.pipeline import fill_model_inputs, train
from tests.conftest import DATA, assert_user_error, compose_train, run_script
from tests.datasets import write_tiny_gpt2

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
