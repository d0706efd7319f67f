"""Weights out: ``src/export.py`` writes a self-contained folder that ``sample.py`` / ``eval.py`` take as
``ckpt_path`` with the same results as the checkpoint; a GPT-2-layout GPT also loads with ``transformers``."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from genlab.export import export_run
from genlab.pipeline import evaluate, sample, train
from tests.conftest import DATA, TINY_GPT, assert_user_error, compose_train, quick_run, run_script

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gan_export(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("export")
    train(compose_train(quick_run("gan"), root / "run"))
    export_run(compose_train([f"ckpt_path={root / 'run'}", f"out={root / 'export'}"], root / "x", "export"))
    return root / "run", root / "export"


def test_export_folder_holds_weights_config_and_card(gan_export):
    _, folder = gan_export
    assert {"model.safetensors", "config.yaml", "genlab.json", "README.md", "samples.png"} <= {
        p.name for p in folder.iterdir()
    }
    card = (folder / "README.md").read_text()
    assert "library_name: genlab" in card and "| `val/d_x` |" in card and "![samples](samples.png)" in card


def test_sample_and_eval_from_the_export_equal_the_checkpoints(gan_export, tmp_path):
    run, folder = gan_export
    samples = []
    for source in (run, folder):
        out = tmp_path / f"samples_{source.name}"
        out.mkdir()
        sample(compose_train([f"ckpt_path={source}", "num_samples=8", "format=npz", "seed=3"], out, "sample"))
        samples.append(np.load(out / "samples.npz")["images"])
    np.testing.assert_array_equal(samples[0], samples[1])
    metrics = [
        evaluate(compose_train([f"ckpt_path={source}"], tmp_path / f"eval_{source.name}", "eval"))
        for source in (run, folder)
    ]
    assert metrics[0] == metrics[1] and "val/d_x" in metrics[0]


def test_a_corrupt_export_is_refused_in_one_line(gan_export, tmp_path):
    _, folder = gan_export
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in folder.iterdir():
        data = file.read_bytes()
        (broken / file.name).write_bytes(data[: len(data) // 2] if file.name == "model.safetensors" else data)
    proc = run_script("sample.py", [f"ckpt_path={broken}"], tmp_path, check=False)
    assert_user_error(proc, "model.safetensors is truncated or corrupt")


def test_hub_upload_offline_is_one_line_and_keeps_the_export(gan_export, tmp_path):
    run, _ = gan_export
    out = tmp_path / "exported"
    proc = run_script(
        "export.py",
        [f"ckpt_path={run}", f"out={out}", "hub_repo=someone/genlab-test"],
        tmp_path,
        check=False,
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert_user_error(proc, "hub_repo=someone/genlab-test: the upload failed")
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()


def test_gpt_export_loads_with_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    book = DATA / "tinyshakespeare" / "input.txt"
    args = ["model=gpt", "data=text_file", f"data.path={book}", *TINY_GPT, "model.net.bias=true"]
    args += ["trainer.max_steps=3", "callbacks.progress_bar=null", "callbacks.text_samples.max_new_tokens=4"]
    train(compose_train(args, tmp_path / "run"))
    export_run(compose_train([f"ckpt_path={tmp_path / 'run'}"], tmp_path / "x", "export"))
    folder = tmp_path / "run" / "export"
    assert (folder / "tokenizer.json").is_file() and "```text" in (folder / "README.md").read_text()

    hf = transformers.GPT2LMHeadModel.from_pretrained(folder / "hf").eval()
    from genlab.pipeline import load_run

    _, checkpoint, run_cfg = load_run(str(folder))
    from hydra.utils import instantiate

    model = instantiate(run_cfg.model, _convert_="all")
    model.load_state_dict(checkpoint["state_dict"])
    idx = torch.randint(0, run_cfg.model.net.vocab_size, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(model.eval().net(idx)[0], hf(idx).logits, atol=1e-5, rtol=0)
    out = tmp_path / "text"
    out.mkdir()
    sample(compose_train([f"ckpt_path={folder}", "num_samples=1", "max_new_tokens=8"], out, "sample"))
    assert (out / "samples.txt").read_text()
    json.loads((folder / "genlab.json").read_text())  # the progress marker is plain JSON
