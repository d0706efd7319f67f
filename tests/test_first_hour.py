"""A new user's first hour: the commands users type work as typed, offline, on a fresh machine.

Each test runs ``python src/...`` in a subprocess, as a user would, with only small-size overrides
appended; failures must be one ``Error:`` line without a traceback.
"""

import json
import os
import random
import zipfile
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from genlab.models.gan import GAN
from genlab.pipeline import configure_ddp
from tests.conftest import QUICK, SMALL, TINY_GPT, assert_user_error, compose_train, run_script
from tests.datasets import write_celeba

pytestmark = pytest.mark.slow

TINY = {**SMALL, "gpt": TINY_GPT}  # small networks, a few batches: only sizes change, not the command
SHORT = [
    "trainer.max_epochs=2",
    "+trainer.limit_train_batches=3",
    "+trainer.limit_val_batches=1",
    "callbacks.progress_bar=null",
]
OFFLINE = {"GENLAB_FID_WEIGHTS": "", "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
NOTICE = "FID/KID skipped: no FID Inception weights found"


def offline_env(tmp_path: Path) -> dict:
    """No FID weights reachable: an empty torch hub, no $GENLAB_FID_WEIGHTS, downloads refused."""
    (tmp_path / "torch_home").mkdir(exist_ok=True)
    return {**OFFLINE, "TORCH_HOME": str(tmp_path / "torch_home")}


# ---- 1. the headline command: the default trainer with trainer.devices=2 ----
@pytest.fixture(scope="module")
def celeba_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("celeba")
    write_celeba(root / "img_align_celeba", n=48)  # 2 val images: one per rank
    return root


# CI runs the headline command (the GAN); the other families' DDP runs are tests/test_ddp.py's (ddp_cpu, every
# family) and the README's `-m seed=1,2 model=vae trainer.devices=2`, so their devices=2 runs here are `long`.
@pytest.mark.parametrize(
    "family", ["gan", *(pytest.param(f, marks=pytest.mark.long) for f in ("vae", "diffusion", "gpt"))]
)
def test_trainer_devices_2_runs_two_processes_for_every_family(family, celeba_root, tmp_path):
    data = (
        ["data=text_docs", "callbacks.text_samples.max_new_tokens=4"]
        if family == "gpt"
        else ["data=celeba", f"data.root={celeba_root}", "data.resolution=16", "data.num_workers=0"]
    )
    run = tmp_path / "run"
    args = [f"model={family}", *data, "trainer.devices=2", *TINY[family], *SHORT, f"hydra.run.dir={run}"]
    run_script("train.py", args, tmp_path, env=offline_env(tmp_path))
    log = (run / "train.log").read_text()
    assert "MEMBER: 2/2" in log, "two processes joined the process group"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "metrics.json").is_file()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize(
    ("model_args", "expected"),
    [(QUICK, True), (["model=vae"], False), (["model=diffusion"], False)],
)
def test_ddp_searches_unused_parameters_only_where_the_model_needs_it(model_args, expected, tmp_path):
    from hydra.utils import instantiate

    model = instantiate(compose_train(model_args, tmp_path).model, _convert_="all")
    assert isinstance(model, GAN) == expected
    trainer = pl.Trainer(accelerator="cpu", devices=2, logger=False, enable_progress_bar=False)
    configure_ddp(trainer, model)
    assert trainer.strategy._ddp_kwargs["find_unused_parameters"] is expected
    explicit = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_find_unused_parameters_true", logger=False
    )
    configure_ddp(explicit, model)
    assert explicit.strategy._ddp_kwargs["find_unused_parameters"] is True, "the config's choice stands"


# ---- 2. the default run on an offline machine ----
def test_default_run_completes_offline_without_fid_weights(tmp_path):
    run = tmp_path / "run"
    proc = run_script("train.py", [*SHORT, f"hydra.run.dir={run}"], tmp_path, env=offline_env(tmp_path))
    output = proc.stdout + proc.stderr
    assert output.count(NOTICE) == 1, output[-3000:]
    assert "metrics.fid.weights_path=<file> or GENLAB_FID_WEIGHTS=<file>" in output, "how to enable FID"
    assert "is deprecated" not in output, "no deprecation notice the user cannot act on"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "samples").glob("epoch_*.png")), "sample grids"
    metrics = json.loads((run / "metrics.json").read_text())
    assert "train/g_loss" in metrics and "val/fid" not in metrics


@pytest.mark.parametrize(
    "args",
    [["optimized_metric=val/fid"], ["hparams_search=gan_optuna", "hydra.sweeper.n_trials=1"]],
    ids=["command_line", "sweep"],
)
def test_asking_for_fid_without_weights_fails_before_training(args, tmp_path):
    run = tmp_path / "run"
    proc = run_script(
        "train.py",
        [
            *args,
            *SHORT,
            f"hydra.run.dir={run}",
            f"hydra.sweep.dir={run}",
            "hydra.job_logging.root.level=INFO",
        ],
        tmp_path,
        env={**offline_env(tmp_path), "HYDRA_FULL_ERROR": ""},
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert "FID/KID are asked for but no FID Inception weights found" in output, output[-3000:]
    assert "set optimized_metric=auto to select checkpoints on another metric" in output
    assert not list(run.rglob("*.ckpt")), "nothing trained"
    if "-m" not in args and "hparams_search" not in args[0]:
        assert_user_error(proc, "FID/KID are asked for")


# ---- 3. a user's own text ----
def write_book(path: Path) -> Path:
    """Plain ASCII prose, then a last part with characters that occur nowhere before it."""
    rng = random.Random(0)
    words = ["the", "sea", "was", "calm", "and", "grey", "under", "a", "low", "sky", "we", "sailed", "on"]
    lines = [" ".join(rng.choice(words) for _ in range(10)).capitalize() + "." for _ in range(600)]
    path.write_text("\n".join(lines) + "\nÉpilogue — naïve café, 東京 ☃ «fin»\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("tokenizer", ["char", "bpe"])
def test_any_utf8_text_trains_and_samples(tokenizer, tmp_path):
    book = write_book(tmp_path / "Les Misérables, t. 1 (1862).txt")  # a path Hydra refuses unquoted
    run = tmp_path / "run"
    data = [f"data.path={book.name}", f"data.tokenizer={tokenizer}", "data.val_fraction=0.05"]  # relative
    data += ["data.vocab_size=300"] if tokenizer == "bpe" else []
    small = [*TINY["gpt"], "callbacks.text_samples.max_new_tokens=4", *SHORT]
    train_args = ["model=gpt", "data=text_file", *data, *small, f"hydra.run.dir={run}"]
    run_script("train.py", train_args, tmp_path, cwd=tmp_path)  # from the book's folder
    assert json.loads((run / "metrics.json").read_text())["val/loss"] > 0

    sample = ["num_samples=2", "max_new_tokens=5", f"ckpt_path={run}"]
    run_script("sample.py", [*sample, 'prompt="東京"', f"hydra.run.dir={tmp_path / 's1'}"], tmp_path)
    assert (tmp_path / "s1" / "samples.txt").read_text().startswith("東京")
    run_script("sample.py", [*sample, r'prompt="sea\nwas"', f"hydra.run.dir={tmp_path / 's3'}"], tmp_path)
    assert (tmp_path / "s3" / "samples.txt").read_text().startswith("sea\nwas"), "\\n as typed: a newline"
    typed = "Sea, calm «fin» — naïve" + (" (grey)? it's ${x} = \\" if tokenizer == "bpe" else "")
    run_script("sample.py", [*sample, f"prompt={typed}", f"hydra.run.dir={tmp_path / 's4'}"], tmp_path)
    written = (tmp_path / "s4" / "samples.txt").read_text()
    assert written.startswith(typed), "as a shell passes it: commas, quotes, ${ and all"
    if tokenizer == "char":  # evaluated from elsewhere, the run finds its book; then another text, typed
        run_script("eval.py", [f"ckpt_path={run}", f"hydra.run.dir={tmp_path / 'again'}"], tmp_path)
        again = json.loads((tmp_path / "again" / "metrics.json").read_text())["val/loss"]
        assert again == pytest.approx(json.loads((run / "metrics.json").read_text())["val/loss"], rel=1e-4)
        other = tmp_path / "autre=texte.txt"
        other.write_text(book.read_text()[::-1].replace("\n", " ", 100))
        run_script(
            "eval.py", [f"ckpt_path={run}", f"data.path={other}", f"hydra.run.dir={tmp_path / 'e'}"], tmp_path
        )
        measured = json.loads((tmp_path / "e" / "metrics.json").read_text())["val/loss"]
        assert measured != json.loads((run / "metrics.json").read_text())["val/loss"]
        # resumed from the checkout, the run's options not retyped: a longer budget and a GPT's own setting
        resumed = tmp_path / "resumed"
        again = [
            f"ckpt_path={run}",
            "trainer.max_epochs=3",
            "model.weight_decay=0.05",
            f"hydra.run.dir={resumed}",
        ]
        run_script("train.py", again, tmp_path)
        before, after = (
            torch.load(r / "checkpoints" / "last.ckpt", weights_only=True) for r in (run, resumed)
        )
        assert (before["global_step"], after["global_step"]) == (6, 9)
        model = before["genlab_config"]["model"]
        model["weight_decay"] = model["optimizer"]["weight_decay"] = 0.05  # the optimizer's is interpolated
        assert after["genlab_config"]["model"] == model
        assert after["genlab_config"]["data"]["path"] == str(book)
        decays = [group["weight_decay"] for group in after["optimizer_states"][0]["param_groups"]]
        assert decays == [0.05, 0.0], "the setting typed now, not the checkpoint's 0.1"
        # trained on with another text: read with the model's vocabulary, not one learned from that text
        sequel = tmp_path / "sequel.txt"
        sequel.write_text("The calm sea was grey. We sailed on.\n" * 60)  # 20 of the book's 43 characters
        on = [f"ckpt_path={run}", "trainer.max_epochs=3", f"data.path={sequel}"]
        run_script("train.py", [*on, f"hydra.run.dir={tmp_path / 'sequel'}"], tmp_path)
        assert (tmp_path / "sequel" / "tokenizer.json").read_text() == (run / "tokenizer.json").read_text()
        sequel.write_text(sequel.read_text() + "Жили-были.\n")
        unknown = run_script("train.py", [*on, f"hydra.run.dir={tmp_path / 'x'}"], tmp_path, check=False)
        assert_user_error(unknown, "'-Жбилы': not in the char tokenizer's vocabulary")
        bpe = run_script(
            "train.py", [*on, "data.tokenizer=bpe", f"hydra.run.dir={tmp_path / 'y'}"], tmp_path, check=False
        )
        assert_user_error(bpe, "data.tokenizer=bpe: the checkpoint's model reads a char vocabulary of")
    unseen = run_script(
        "sample.py", [*sample, 'prompt="Жили"', f"hydra.run.dir={tmp_path / 's2'}"], tmp_path, check=False
    )
    if tokenizer == "bpe":  # byte-level: any text encodes
        assert unseen.returncode == 0 and (tmp_path / "s2" / "samples.txt").read_text().startswith("Жили")
    else:
        assert_user_error(unseen, "'Жил': not in the char tokenizer's vocabulary")
        empty = run_script(
            "sample.py", [*sample, "prompt=", f"hydra.run.dir={tmp_path / 's3'}"], tmp_path, check=False
        )
        assert_user_error(
            empty,
            'prompt is empty: the model continues text, so give it at least one token, e.g. prompt="\\n"',
        )


def test_a_run_stopped_between_validations_keeps_its_weights(tmp_path):
    """The README's Tiny Shakespeare experiment validates every 250 steps: stopped by trainer.max_steps before
    the first, its last.ckpt holds the final step (the checkpoint callbacks, which save after validations,
    wrote nothing), the log says so, and sample.py reads it."""
    book = write_book(tmp_path / "input.txt")
    run = tmp_path / "run"
    args = ["experiment=gpt_shakespeare_char_cpu", f"data.path={book}", *TINY["gpt"], "trainer.max_steps=3"]
    proc = run_script("train.py", [*args, "callbacks.progress_bar=null", f"hydra.run.dir={run}"], tmp_path)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    assert f"{run / 'checkpoints' / 'last.ckpt'} holds the final weights" in proc.stdout + proc.stderr
    sample = ["num_samples=1", "max_new_tokens=4", f"ckpt_path={run}", f"hydra.run.dir={tmp_path / 's'}"]
    run_script("sample.py", sample, tmp_path)
    assert (tmp_path / "s" / "samples.txt").read_text()


# ---- 4. errors meant for users: one line, no traceback ----
@pytest.fixture(scope="module")
def gan_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("gan_run")
    run_script("train.py", [*QUICK, f"hydra.run.dir={run}"], run)
    return run


def bad_inputs(tmp: Path, gan_run: Path) -> dict[str, tuple[str, list[str], str]]:
    """name -> (script, arguments, the message's key phrase)."""
    (tmp / "empty").mkdir()
    (tmp / "a_file").write_text("")
    (tmp / "by_class" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp / "by_class" / "a" / "0.png")
    with zipfile.ZipFile(tmp / "novel.epub", "w") as book:  # a user's e-book, as shops sell them
        book.writestr("mimetype", "application/epub+zip")
    (tmp / "corpus.jsonl").write_text('{"id": 1, "content": "A first document."}\n')  # not the default field
    broken = tmp / "broken.ckpt"
    broken.write_bytes((gan_run / "checkpoints" / "last.ckpt").read_bytes()[:5000])
    return {
        "missing_dataset": ("train.py", ["data=mnist", "data.root=/nonexistent/data"], "MNIST not found"),
        "batch_size": ("train.py", ["data.batch_size=0"], "data.batch_size must be positive, got 0"),
        "lr": ("train.py", ["model.lr=-0.001"], "model.lr must be positive, got -0.001"),
        "image_size": ("train.py", ["model.generator.resolution=64"], "model.generator.resolution=64 but"),
        "empty_folder": ("train.py", ["data=image_folder", f"data.root={tmp / 'empty'}"], "No images"),
        "unwritable": (
            "train.py",
            [f"hydra.run.dir={tmp / 'a_file' / 'run'}"],
            "Cannot create the output dir",
        ),
        "other_family": (
            "train.py",
            ["model=vae", f"ckpt_path={gan_run}"],
            "was trained with genlab.models.gan.GAN",
        ),
        "truncated_ckpt": ("eval.py", [f"ckpt_path={broken}"], "truncated or corrupt"),
        "missing_ckpt": ("sample.py", [f"ckpt_path={tmp / 'nowhere'}"], "no checkpoint at"),
        "no_samples": (
            "sample.py",
            [f"ckpt_path={gan_run}", "num_samples=0"],
            "num_samples must be a positive",
        ),
        "fp16_on_cpu": (
            "train.py",
            ["trainer.accelerator=cpu", "trainer.precision=16-mixed"],
            "needs a CUDA GPU",
        ),
        "gpu_absent": ("train.py", ["trainer=gpu"], "no CUDA GPU is visible"),
        "fid_weights": ("train.py", ["metrics.fid.weights_path=/nonexistent.pth"], "which is not a file"),
        "gan_loss": ("train.py", ["model.loss=wasserstein"], "model.loss='wasserstein' is unknown"),
        "gpt_on_images": ("train.py", ["model=gpt"], "trains on text data but data=digits yields image data"),
        "resolution": (  # MNIST's native 28 px with the convolutional VAE (DCGAN-style networks)
            "train.py",
            ["model=vae", "data.resolution=28"],
            "model=vae's convolutional networks need a power-of-two data.resolution >= 8, got 28",
        ),
        "smaller_budget": (
            "train.py",
            [f"ckpt_path={gan_run}", "trainer.max_epochs=1"],
            "leaves nothing to train",
        ),
        "resume_other_shape": (  # a setting that shapes the weights, typed anew: Lightning's load traceback
            "train.py",
            [f"ckpt_path={gan_run}", "model.generator.width=32", "trainer.max_epochs=3"],
            "Settings that differ from the run's: model.generator.width=32 (the run: 16). Resume with the run's",
        ),
        "eval_other_shape": (
            "eval.py",
            [f"ckpt_path={gan_run}", "+overrides.model.generator.latent_dim=64"],
            "Settings that differ from the run's: model.generator.latent_dim=64 (the run: 100). Leave out the "
            "overrides that change the model's shape.",
        ),
        "resume_untyped": (  # retyped without width 16: the default 64 would not load
            "train.py",
            [f"ckpt_path={gan_run}", "model=gan", "trainer.max_epochs=3"],
            "model.generator.width=16 (now 64)",
        ),
        "samples_in_subfolders": (
            "eval.py",
            [f"samples={tmp / 'by_class'}", "data=digits"],
            "its subfolders a do, which are not searched",
        ),
        "eval_other_data": (
            "eval.py",
            [f"ckpt_path={gan_run}", "data=mnist"],
            "a checkpoint is evaluated on the data it was trained on: change that with data.<key>=",
        ),
        "eval_ckpt_train_split": (
            "eval.py",
            [f"ckpt_path={gan_run}", "split=train"],
            "split=train applies to samples= and export_reference=",
        ),
        "gan_clipping": (
            "train.py",
            ["trainer.gradient_clip_val=1.0"],
            "trainer.gradient_clip_val does not apply: this model steps its optimizers itself",
        ),
        "seed": ("train.py", ["seed=abc"], "seed must be a whole number, got 'abc': e.g. seed=42"),
        "override_typo": (
            "train.py",
            ["model.lrr=0.1"],
            "model.lrr is not an option of model; did you mean model.lr?",
        ),
        "unreadable_value": (
            "train.py",
            ["model.lr=[1,2"],
            "model.lr=[1,2: Hydra cannot read this value (no viable alternative at input '[1,2'); quote it",
        ),
        "unknown_config": (
            "train.py",
            ["model=ganx"],
            "model=ganx is not a config of model (conf/model/): choose one of diffusion, flow, gan, gpt, vae",
        ),
        "unlisted_argument": (  # an argument of the class the config leaves out: Hydra's `+` is the way
            "train.py",
            ["callbacks.model_checkpoint.save_last=true"],
            "callbacks.model_checkpoint.save_last is not in callbacks.model_checkpoint's config, but "
            "pytorch_lightning.callbacks.ModelCheckpoint takes it: add it with +callbacks.model_checkpoint.save_last=true",
        ),
        "sample_training_key": (
            "sample.py",
            [f"ckpt_path={gan_run}", "model.num_samples=4"],
            "model.num_samples: this command's config has no model section; did you mean num_samples=4?",
        ),
        "top_p": (
            "sample.py",
            [f"ckpt_path={gan_run}", "top_p=1.5"],
            "top_p must be in (0, 1], e.g. top_p=0.9",
        ),
        "ebook": (
            "train.py",
            ["model=gpt", "data=text_file", f"data.path={tmp / 'novel.epub'}"],
            "novel.epub is a ZIP archive (as EPUB, DOCX and ODT documents are), not plain text: extract its text",
        ),
        "jsonl_field": (
            "train.py",
            ["model=gpt", "data=text_file", f"data.path={tmp / 'corpus.jsonl'}"],
            "line 1 has no text field 'text': set data.text_field to one of content",
        ),
        "csv_flush": (
            "train.py",
            ["logger.csv.flush_seconds=soon"],
            "logger.csv.flush_seconds must be a number",
        ),
    }


CASES = [
    "missing_dataset", "batch_size", "lr", "image_size", "empty_folder", "unwritable", "other_family",
    "truncated_ckpt", "missing_ckpt", "no_samples", "fp16_on_cpu", "gpu_absent", "fid_weights", "gan_loss", "gpt_on_images", "resolution",
    "smaller_budget", "csv_flush", "samples_in_subfolders", "ebook", "top_p", "seed", "eval_other_data",
    "gan_clipping", "eval_ckpt_train_split", "resume_untyped", "jsonl_field", "override_typo", "unknown_config",
    "unlisted_argument", "sample_training_key", "unreadable_value", "resume_other_shape", "eval_other_shape",
]  # fmt: skip


# Mistakes the config alone shows are reported before the heavy imports: in about a second instead of 5-10 s.
CONFIG_ONLY = (
    "batch_size", "lr", "image_size", "missing_ckpt", "no_samples", "fp16_on_cpu", "top_p", "seed", "eval_other_data",
    "eval_ckpt_train_split", "unknown_config", "sample_training_key", "unreadable_value",
)  # fmt: skip
NOT_IMPORTED = {
    **dict.fromkeys(CONFIG_ONLY, "torch"),
    "gpu_absent": "pytorch_lightning",  # torch is asked how many GPUs it sees
}


@pytest.mark.parametrize("case", CASES)
def test_user_errors_print_one_line_without_traceback(case, gan_run, tmp_path):
    if case == "gpu_absent" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    script, args, message = bad_inputs(tmp_path, gan_run)[case]
    extra = ["callbacks.progress_bar=null"] if script == "train.py" else []
    if not any(a.startswith("hydra.run.dir") for a in args):
        args = [*args, f"hydra.run.dir={tmp_path / 'run'}"]
    env = {"HYDRA_FULL_ERROR": "", "PYTHONPROFILEIMPORTTIME": "1"}  # `-X importtime`: each import on stderr
    proc = run_script(script, [*extra, *args], tmp_path, env=env, check=False)
    assert_user_error(proc, message)
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "hydra" in imported, "the import log is read"
    if case in NOT_IMPORTED:
        assert NOT_IMPORTED[case] not in imported, (
            f"{case}: reported only after importing {NOT_IMPORTED[case]}"
        )


def test_full_error_switch_shows_the_traceback(tmp_path):
    proc = run_script(
        "sample.py",
        [f"ckpt_path={tmp_path / 'nowhere'}"],
        tmp_path,
        env={"HYDRA_FULL_ERROR": "1"},
        check=False,
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "CheckpointError" in proc.stderr
    typo = run_script("train.py", ["model.lrr=0.1"], tmp_path, env={"HYDRA_FULL_ERROR": "1"}, check=False)
    assert typo.returncode != 0 and "Traceback" in typo.stderr and "ConfigCompositionException" in typo.stderr


def test_resume_with_a_larger_budget_trains_on(gan_run, tmp_path):
    run = tmp_path / "run"
    run_script(
        "train.py", [*QUICK, "trainer.max_epochs=3", f"ckpt_path={gan_run}", f"hydra.run.dir={run}"], tmp_path
    )
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2
    assert os.path.getsize(run / "metrics.json") > 0
