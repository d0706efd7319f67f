"""Every entry-point shortcut works for every family or says in one line that it does not apply."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genlab.cli import quoted_overrides
from genlab.pipeline import train
from tests.conftest import QUICK, ROOT, TINY_GPT, assert_user_error, compose_train, run_script
from tests.datasets import copy_task, write_copy_corpus

pytestmark = pytest.mark.slow
TEXT = [
    "model=gpt",
    *TINY_GPT,
    "trainer=cpu",
    "callbacks.progress_bar=null",
    "callbacks.text_samples.max_new_tokens=4",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A GAN on digits, a GPT on text_docs and a GPT translating a toy parallel corpus."""
    root = tmp_path_factory.mktemp("entry_points")
    args = {
        "image": QUICK,
        "text": [*TEXT, "data=text_docs", "trainer.max_epochs=1", "+trainer.limit_train_batches=4"],
        "parallel": [  # as tests/test_ddp.py: learns the copy task in a few epochs
            *TEXT,
            *copy_task(root / "corpus"),
            "trainer.max_epochs=4",
        ],
    }
    for name, overrides in args.items():
        train(compose_train(overrides, root / name))
    return {name: root / name for name in args}


def evaluate(run: Path, args: list[str], out: Path, check: bool = True, env: dict | None = None):
    return run_script(
        "eval.py", [f"ckpt_path={run}", *args, f"hydra.run.dir={out}"], out, check=check, env=env
    )


def test_num_samples_sets_fid_samples_of_image_runs_and_says_what_applies_to_text(
    runs, fid_weights, tmp_path
):
    """QUICK trains with metrics=null, as a run without Inception weights stores it: num_samples=N measures
    FID/KID with eval.py's image_metrics group once the weights are there, and names them while they are not."""
    image = evaluate(runs["image"], ["num_samples=4"], tmp_path / "image", check=False)
    assert_user_error(image, "FID/KID are asked for but no FID Inception weights")
    (error,) = [line for line in image.stderr.splitlines() if line.startswith("Error")]
    assert "leave out num_samples" in error and "optimized_metric" not in error, "eval's own way on"
    weights = {"GENLAB_FID_WEIGHTS": str(fid_weights)}
    now = ["num_samples=6", "image_metrics=default", "metrics.max_real=6", f"paths.cache_dir={tmp_path}"]
    run_script(
        "eval.py",
        [f"ckpt_path={runs['image']}", *now, f"hydra.run.dir={tmp_path / 'now'}"],
        tmp_path,
        env=weights,
    )
    measured = json.loads((tmp_path / "now" / "metrics.json").read_text())
    assert measured["val/fid"] > 0 and measured["val/fid_samples"] == 6
    text = evaluate(runs["text"], ["num_samples=10"], tmp_path / "text", check=False)
    assert_user_error(text, "+overrides.model.bleu_samples=N")
    with_fid = [
        "num_samples=6",
        "+overrides.metrics={_target_: genlab.callbacks.image_metrics.ImageMetrics, max_real: 6}",
        f"+overrides.metrics.fid.weights_path={fid_weights}",
        f"+overrides.metrics.cache_dir={tmp_path / 'cache'}",
    ]
    evaluate(runs["image"], with_fid, tmp_path / "fid")
    assert json.loads((tmp_path / "fid" / "metrics.json").read_text())["val/fid"] > 0


def test_eval_overrides_name_a_misspelt_option_and_fill_a_missing_metrics_section(
    runs, fid_weights, tmp_path
):
    """eval.py's model.<key>=/data.<key>= (or +overrides.<...>) must name options of the run: a typo gets the
    closest one in one line. Metric settings for a run trained without FID start from eval's image_metrics."""
    typo = evaluate(runs["image"], ["model.ema_decy=0.9"], tmp_path / "typo", check=False)
    assert_user_error(
        typo, "model.ema_decy is not an option of the evaluated run's model; did you mean model.ema_decay?"
    )
    nested = evaluate(runs["text"], ["+overrides.model.net.n_layers=2"], tmp_path / "nested", check=False)
    assert_user_error(
        nested, "model.net.n_layers is not an option of the evaluated run's model.net; did you mean"
    )
    settings = ["+overrides.metrics.max_real=6", "+overrides.metrics.batch_size=6", "num_samples=6"]
    evaluate(runs["image"], settings, tmp_path / "fid", env={"GENLAB_FID_WEIGHTS": str(fid_weights)})
    measured = json.loads((tmp_path / "fid" / "metrics.json").read_text())
    assert measured["val/fid"] > 0 and measured["val/fid_samples"] == 6


def test_data_root_moves_folder_datasets_and_says_what_applies_to_others(runs, tmp_path):
    moved = tmp_path / "moved"
    write_copy_corpus(moved)
    evaluate(runs["parallel"], [f"data_root={moved}"], tmp_path / "parallel")
    assert "val/bleu" in json.loads((tmp_path / "parallel" / "metrics.json").read_text())
    docs = evaluate(runs["text"], [f"data_root={moved}"], tmp_path / "docs", check=False)
    assert_user_error(
        docs, "data_root applies to datasets read from a folder; TextDocsDataModule needs nothing"
    )
    image = evaluate(runs["image"], [f"data_root={moved}"], tmp_path / "image", check=False)
    assert_user_error(
        image, "data_root applies to datasets read from a folder; DigitsDataModule needs nothing"
    )


def test_eval_of_a_text_run_reports_generation_of_the_split_it_evaluates(runs, tmp_path):
    for split in ("val", "test"):
        evaluate(runs["parallel"], [f"split={split}"], tmp_path / split)
        metrics = json.loads((tmp_path / split / "metrics.json").read_text())
        assert metrics[f"{split}/bleu"] > 5, "BLEU of every pair of the split (the toy corpus is learnable)"
        (samples,) = (tmp_path / split / "samples").glob("text_*.txt")
        assert ("test_" in samples.name) == (split == "test") and "--- reference:" in samples.read_text()
    val, test = (json.loads((tmp_path / s / "metrics.json").read_text()) for s in ("val", "test"))
    assert val["val/loss"] != test["test/loss"], "different sentences"


def test_a_translation_model_samples_translations_of_the_prompt(runs, tmp_path):
    """sample.py on a run trained on pairs reads the prompt as a source sentence (its tokens and <sep>, as in
    training) and writes the translation up to <eos>: greedy, the same as the BLEU path's decode."""
    from hydra.utils import instantiate

    from genlab.pipeline import load_run

    source = "red cat runs big tree"
    args = [f"ckpt_path={runs['parallel']}", f"prompt={source}", "temperature=0", "num_samples=2"]
    run_script("sample.py", [*args, "max_new_tokens=20", f"hydra.run.dir={tmp_path}"], tmp_path)
    written = (tmp_path / "samples.txt").read_text().split("\n\n")

    _, checkpoint, run_cfg = load_run(str(runs["parallel"]))
    model = instantiate(run_cfg.model, _convert_="all")
    model.load_state_dict(checkpoint["state_dict"])
    dm = instantiate(run_cfg.data, _convert_="all")
    dm.tokenizer = dm.tokenizer_from_checkpoint(checkpoint)
    (expected,) = model.eval().translate([dm.prompt_ids(source)], dm.eos_id)
    assert written == [dm.tokenizer.decode(expected).strip()] * 2 and written[0], written
    assert source.split()[0] in written[0].split(), "the copy task learned: the source's words come back"


def test_bits_per_character_on_a_parallel_corpus_counts_characters(runs):
    metrics = json.loads((runs["parallel"] / "metrics.json").read_text())
    bits_per_token = metrics["val/loss"] / torch.log(torch.tensor(2.0)).item()
    assert metrics["val/bpc"] < 0.5 * bits_per_token, "a BPE token spans several characters"


def test_experiments_without_a_data_path_say_where_to_get_the_data(tmp_path):
    for experiment, key in (("gpt_multi30k", "data.root"), ("gpt_shakespeare_char_cpu", "data.path")):
        proc = run_script(
            "train.py",
            [f"experiment={experiment}", f"hydra.run.dir={tmp_path / experiment}"],
            tmp_path,
            check=False,
        )
        assert_user_error(proc, f"{key} is not set")
        assert "https://" in proc.stderr, "where to get the data"


CHECK_MEMORY = """
import resource, sys, torch
from omegaconf import OmegaConf
from genlab.checkpoints import check_resumable
cfg = OmegaConf.create({"model": {"_target_": "genlab.models.gan.GAN"}, "trainer": {"max_epochs": 10}})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
check_resumable(sys.argv[1], cfg)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_resume_check_reads_the_checkpoint_without_loading_its_tensors(tmp_path):
    big = tmp_path / "big.ckpt"
    torch.save(
        {
            "state_dict": {"w": torch.ones(100_000_000)},  # 400 MB
            "genlab_config": {"model": {"_target_": "genlab.models.gan.GAN"}},
            "epoch": 0,
            "global_step": 10,
        },
        big,
    )
    proc = subprocess.run(
        [sys.executable, "-c", CHECK_MEMORY, str(big)], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.split()[-1]) < 100, f"peak memory grew by {proc.stdout.split()[-1]} MB"


def test_eval_split_test_without_a_test_split_refuses_to_carve_one_from_training_data(runs, tmp_path):
    for name in ("image", "text"):  # digits trains with a test split; text_docs without one
        proc = evaluate(runs[name], ["split=test"], tmp_path / name, check=False)
        if name == "image":
            assert proc.returncode == 0 and "test/d_x" in json.loads(
                (tmp_path / name / "metrics.json").read_text()
            )
        else:
            assert_user_error(
                proc, "data=text_docs) has no test split, and one carved now would hold examples"
            )
    # a parallel corpus holds its test split in files: the setting that names them (neither train nor val)
    other = evaluate(
        runs["parallel"], ["split=test", "data.test_split=test_2017"], tmp_path / "p", check=False
    )
    assert_user_error(
        other,
        "(data=parallel) has no test split: it holds the split test_2016_flickr: "
        "set data.test_split=test_2016_flickr, or evaluate split=val.",
    )


EXIT_PROBE = """
import atexit, sys, threading, time
from pathlib import Path
from genlab.cli import run_and_exit

out = Path(sys.argv[1])

def main():
    def late():  # a non-daemon thread still working when main returns
        time.sleep(0.5)
        (out / "thread").write_text("done")
    threading.Thread(target=late).start()
    atexit.register(lambda: (out / "atexit").write_text(str((out / "thread").exists())))
    print("buffered", end="")  # no newline, no flush
    sys.exit(sys.argv[2] if sys.argv[2] != "ok" else None)

run_and_exit(main)
"""


@pytest.mark.parametrize("ending, code", [("ok", 0), ("Error: something", 1)])
def test_entry_points_exit_as_python_does_without_its_teardown(ending, code, tmp_path):
    """run_and_exit skips only the interpreter's final teardown: threads are joined, then atexit handlers
    run, buffered output is written and the exit status is the one ``sys.exit`` gave."""
    env = {"PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", EXIT_PROBE, str(tmp_path), ending], capture_output=True, text=True, env=env
    )
    assert proc.returncode == code and proc.stdout == "buffered"
    assert proc.stderr.strip() == ("" if code == 0 else ending)
    assert (tmp_path / "atexit").read_text() == "True", "atexit ran after the thread was joined"


def test_every_trainer_argument_can_be_typed_without_a_plus(tmp_path):
    """`trainer.max_time=...` as typed, though conf/trainer/ does not list it; a typo is still refused."""
    import inspect

    import pytorch_lightning as pl

    from genlab.cli import TRAINER_ARGUMENTS

    accepted = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self", "logger", "callbacks"}
    assert accepted == TRAINER_ARGUMENTS, "genlab.cli.TRAINER_ARGUMENTS follows the installed Lightning"
    run = tmp_path / "run"
    args = [*QUICK, "trainer.max_epochs=1000", "trainer.max_time=00:00:00:03"]
    proc = run_script("train.py", [*args, f"hydra.run.dir={run}"], tmp_path)
    assert "Time limit reached" in proc.stdout + proc.stderr
    assert "trainer.max_time=00:00:00:03" in (run / ".hydra" / "overrides.yaml").read_text()
    typo = run_script("train.py", [*QUICK, "trainer.max_tim=3"], tmp_path, check=False)
    assert_user_error(typo, "trainer.max_tim is not an option of trainer; did you mean trainer.max_time?")


def test_a_run_stopped_before_validating_says_which_checkpoint_holds_it(tmp_path):
    """trainer.max_steps below an epoch: no validation scored a best checkpoint. One line says so and names
    last.ckpt, instead of Lightning's hint to call ``self.log`` on a metric the family does log."""
    run = tmp_path / "run"
    args = [*QUICK, "optimized_metric=val/d_x", "trainer.max_steps=2", f"hydra.run.dir={run}"]
    out = run_script("train.py", args, tmp_path)
    output = out.stdout + out.stderr
    last = run / "checkpoints" / "last.ckpt"
    assert (
        f"No best checkpoint by val/d_x: training stopped at step 2 before a validation computed it; {last}"
        in output
    )
    assert last.is_file() and "Did you call" not in output
    assert not list((run / "checkpoints").glob("best*")), "nothing scored, nothing kept as best"


def test_a_validation_interval_longer_than_an_epoch_counts_across_epochs(tmp_path):
    """trainer.val_check_interval=6 on epochs of 4 batches: Lightning would refuse to start; it validates at
    batches 6 and 12 of 3 epochs instead."""
    run = tmp_path / "run"
    args = [
        *QUICK,
        "trainer.max_epochs=3",
        "trainer.val_check_interval=6",
        "logger=csv",
        f"hydra.run.dir={run}",
    ]
    proc = run_script("train.py", args, tmp_path)
    assert "validating every 6 batches across epochs" in proc.stdout + proc.stderr
    rows = list(csv.DictReader(next(run.rglob("metrics.csv")).open()))
    validated = sorted({int(r["step"]) for r in rows if r.get("val/d_x")})
    assert validated == [5, 11], "after batches 6 and 12 (the loggers' step counts batches from 0)"


@pytest.mark.parametrize(
    "text",
    ["To be, or not to be", "x=y (z)?", "it's", "${x} \\${y}", "end\\", "a\\'b", 'say "hi"', "東京 🙂", ""],
)
def test_a_prompt_reaches_the_config_as_typed(text):
    """Free text is quoted for Hydra: Hydra's parser and OmegaConf give back exactly what was typed."""
    assert typed_value(quoted_overrides([f"prompt={text}"])) == text
    assert quoted_overrides(["prompt='already quoted'"]) == ["prompt='already quoted'"]
    assert quoted_overrides(["-m", "prompt=a,b"]) == ["-m", "prompt=a,b"], "a multirun's sweep stays a sweep"


@pytest.mark.parametrize(
    "arg, value, quoted",
    [
        ("data.path=/home/josé/livre (1).txt", "/home/josé/livre (1).txt", True),
        ("data.root=/data/a,b", "/data/a,b", True),  # a comma: a sweep, unquoted
        ("+overrides.data.path=x=y.txt", "x=y.txt", True),
        ("metrics.fid.weights_path=~/poids/inceptión.pth", "~/poids/inceptión.pth", True),
        ("data.root=/data/my images", "/data/my images", False),  # Hydra reads it as it is
        ("logger.wandb.name=β-VAE, run (2)", "β-VAE, run (2)", True),  # a name is a string too
        ("ckpt_path=null", None, False),  # Hydra's null stays null
        ("data.root=${paths.data_dir}/x", "${paths.data_dir}/x", False),  # an interpolation stays one
        ("data.urls=shards/train-{000000..000002}.tar", "shards/train-{000000..000002}.tar", True),  # braces
        ("data.val_urls=s3://b/val-000000.tar", "s3://b/val-000000.tar", False),
    ],
)
def test_a_path_reaches_the_config_as_typed(arg, value, quoted):
    """A path is quoted only where Hydra could not read it as one value."""
    (typed,) = quoted_overrides([arg])
    assert typed_value([typed], resolve=False) == value and (typed != arg) == quoted


def test_a_multirun_sweep_of_paths_quotes_each_value():
    """Under -m a comma is a sweep: each of its values is quoted where Hydra cannot read it."""
    swept = ["-m", "data.path=/données/a.txt,/données/b.txt", "seed=1,2"]
    assert quoted_overrides(swept)[1:] == ["data.path='/données/a.txt','/données/b.txt'", "seed=1,2"]
    assert quoted_overrides(["-m", "data.path=a.txt,b.txt"]) == ["-m", "data.path=a.txt,b.txt"]


def typed_value(args: list[str], resolve: bool = True):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    (arg,) = args
    node = OmegaConf.create({"value": OverridesParser.create().parse_override(arg).value()})
    return node.value if resolve else OmegaConf.to_container(node)["value"]
