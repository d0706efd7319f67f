"""Correctness across processes: every family under trainer=ddp_cpu (2 gloo processes).

Parameters stay identical on both ranks (debug=sync_check records per-rank fingerprints), each rank
sees its own data and noise, only rank 0 writes files, and metrics evaluated under DDP equal the
single-process values on the same samples (FID/KID, perplexity, BLEU).
"""

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from genlab.families import FAMILIES
from tests.conftest import LABELLED, QUICK, SMALL, VARIANTS, run_script
from tests.datasets import copy_task, write_image_folder

pytestmark = pytest.mark.slow


def base(variant: str) -> str:
    return variant.removesuffix(LABELLED)


UNSYNCED = "It is recommended to use `self.log("  # Lightning: an epoch value logged without sync under DDP


def ddp_train(args: list[str], run_dir: Path, trainer: str = "ddp_cpu") -> dict:
    """Trains with debug=sync_check; returns the per-rank fingerprints it recorded. Every value logged at
    epoch level is synchronised (or, as FID, computed alike on every rank and logged as such): Lightning
    then has no warning to print about it."""
    proc = run_script(
        "train.py", [f"trainer={trainer}", "debug=sync_check", *args, f"hydra.run.dir={run_dir}"], run_dir
    )
    unsynced = [line for line in proc.stderr.splitlines() if UNSYNCED in line]
    assert not unsynced, f"values logged without sync under DDP: {unsynced}"
    return json.loads((run_dir / "sync_check.json").read_text())


def assert_ranks_in_sync(record: dict) -> None:
    params = record["parameters"]
    assert len(params) == 2 and params[0] == params[1], "identical parameters on both ranks after training"
    assert record["first_batch"][0] != record["first_batch"][1], "each rank reads its own data shard"
    assert record["rng_state"][0] != record["rng_state"][1], "each rank draws its own noise"


def evaluate(ckpt: Path, trainer: str, args: list[str], out: Path) -> dict:
    run_script("eval.py", [f"ckpt_path={ckpt}", f"trainer={trainer}", *args, f"hydra.run.dir={out}"], out)
    return json.loads((out / "metrics.json").read_text())


def layout(run_dir: Path) -> Counter:
    """Relative paths of a run's files, W&B ids and numbers blanked: what was written, and how often."""
    names = (str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))
    return Counter(re.sub(r"\d+", "#", re.sub(r"-[0-9a-z]{8}\b|_[0-9a-f]{20}\b", "", n)) for n in names)


# ---- GAN: manual optimization, two optimizers ----
GAN_ARGS = [
    *[a for a in QUICK if not a.startswith(("trainer=", "metrics=", "optimized_metric="))],
    "logger=many",
    "metrics.num_samples=10",
    "metrics.max_real=10",
    "metrics.every_n_epochs=1",
]


@pytest.fixture(scope="module")
def gan_runs(tmp_path_factory, fid_weights) -> Path:
    root = tmp_path_factory.mktemp("gan_ddp")
    args = [*GAN_ARGS, f"metrics.fid.weights_path={fid_weights}", f"paths.cache_dir={root / 'cache'}"]
    ddp_train(args, root / "ddp")
    ddp_train(args, root / "ddp_again")
    ddp_train(args, root / "single", trainer="cpu")
    return root


def test_gan_ranks_stay_in_sync_and_runs_reproduce(gan_runs):
    record = json.loads((gan_runs / "ddp" / "sync_check.json").read_text())
    assert_ranks_in_sync(record)
    assert record["global_step"] == 16  # each rank: 2 epochs x 4 batches x (D + G step)
    again = json.loads((gan_runs / "ddp_again" / "sync_check.json").read_text())
    assert again["parameters"] == record["parameters"], "per-rank seeding is reproducible"
    metrics = json.loads((gan_runs / "ddp" / "metrics.json").read_text())
    assert metrics["val/fid"] > 0 and "val/kid_mean" in metrics


def test_only_rank_zero_writes(gan_runs):
    ddp, single = layout(gan_runs / "ddp"), layout(gan_runs / "single")
    assert ddp == single, f"files written under DDP differ from one process: {ddp - single} / {single - ddp}"
    assert ddp["samples/epoch_#.png"] == 2 and ddp["checkpoints/last.ckpt"] == 1
    assert sum(1 for p in (gan_runs / "ddp" / "wandb").glob("offline-run-*")) == 1
    assert not (gan_runs / "ddp" / "outputs").exists(), "rank 1 shares rank 0's run dir"


def test_fid_kid_under_ddp_equal_single_process(gan_runs, tmp_path):
    # 16 samples and 16 real images (8 a rank): KID's subset is then the whole set, so it is deterministic too.
    args = ["num_samples=16", "+overrides.metrics.max_real=16", "+overrides.metrics.batch_size=8"]
    args += ["+overrides.metrics.prc.enabled=true", "+overrides.metrics.density_coverage.enabled=true"]
    single = evaluate(
        gan_runs / "ddp", "cpu", [*args, f"+overrides.metrics.cache_dir={tmp_path / 'c1'}"], tmp_path / "1"
    )
    ddp = evaluate(
        gan_runs / "ddp",
        "ddp_cpu",
        [*args, f"+overrides.metrics.cache_dir={tmp_path / 'c2'}"],
        tmp_path / "2",
    )
    assert ddp["val/fid"] == pytest.approx(single["val/fid"], rel=1e-4)
    assert ddp["val/kid_mean"] == pytest.approx(single["val/kid_mean"], rel=1e-4, abs=1e-6)
    for key in ("val/precision", "val/recall", "val/density", "val/coverage"):  # gathered features
        assert ddp[key] == pytest.approx(single[key], abs=1e-6), key


# ---- every image family but the GAN (its own tests above) ----
# CI keeps the unconditional VAE and diffusion (the GAN above) and one conditional path (gan+labels, the cheapest);
# flow, vae+labels and diffusion+labels run under `-m long` (the same DDP code paths, 30-50 s each).
CI_LONG = ("flow", "vae+labels", "diffusion+labels")


@pytest.mark.parametrize(
    "family",
    [
        pytest.param(v, marks=pytest.mark.long) if v in CI_LONG else v
        for v in VARIANTS
        if v != "gan" and FAMILIES[base(v)].modality == "image"
    ],
)
def test_family_ranks_stay_in_sync(family, tmp_path, fid_weights):
    args = [
        f"model={base(family)}",
        *SMALL[base(family)],
        *(["data.labels=true"] if family.endswith(LABELLED) else []),
        *[q for q in QUICK if not q.startswith(("model.", "trainer=", "metrics=", "optimized_metric="))],
        "data.resolution=16",  # the UNet's sample grid costs 4x at 32 px
        f"metrics.fid.weights_path={fid_weights}",
        "metrics.num_samples=10",
        "metrics.max_real=10",
    ]
    record = ddp_train(args, tmp_path)
    assert_ranks_in_sync(record)
    assert (
        record["global_step"] == 8 * FAMILIES[base(family)].steps_per_batch
    )  # 2 epochs x 4 batches per rank
    final = json.loads((tmp_path / "metrics.json").read_text())
    assert final["val/fid"] > 0 and "val/kid_mean" in final, "FID/KID of the family's samples"
    if family.endswith(LABELLED):  # the classifier trained on rank 0, loaded by rank 1; counts summed
        assert 0 <= final["val/sample_accuracy"] <= 1


def test_a_split_smaller_than_a_batch_per_process_still_trains(tmp_path):
    """24 training images, batch 20, 2 processes: 12 each. The loader kept a partial batch only when the whole
    split was smaller than a batch, so each process had none and the run ended at once ("No training batches",
    exit 0); the sample-accuracy classifier (batches of 128) looped forever on fewer than 128 images. The test
    stage (test=true) runs on both processes too, from the best checkpoint each of them finds."""
    write_image_folder(tmp_path / "images", per_folder=15)
    args = [
        "model=vae",
        *SMALL["vae"],
        *[q for q in QUICK if not q.startswith(("model.", "trainer=", "+trainer.limit_train"))],
        "data=image_folder",
        f"data.root={tmp_path / 'images'}",
        "data.resolution=16",
        "data.batch_size=20",
        "data.labels=true",
        "data.test_fraction=0.1",
        "trainer.max_epochs=1",
        "test=true",
    ]
    record = ddp_train(args, tmp_path / "run")
    assert record["global_step"] == 1, "one (partial) batch per process"
    assert_ranks_in_sync(record)
    final = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0 <= final["val/sample_accuracy"] <= 1 and final["test/nelbo"] > 0


# ---- GPT: translation on a parallel corpus, BLEU and perplexity ----
def test_gpt_ranks_in_sync_and_bleu_perplexity_reduced(tmp_path):
    args = [
        "model=gpt",
        *copy_task(tmp_path / "corpus"),
        "model.net.n_layer=2",
        "model.net.n_head=2",
        "model.bleu_samples=41",
        "model.bleu_max_new_tokens=12",
        "trainer.max_epochs=4",
        "callbacks.text_samples=null",
        "callbacks.progress_bar=null",
    ]
    record = ddp_train(args, tmp_path / "run")
    assert_ranks_in_sync(record)
    single = evaluate(tmp_path / "run", "cpu", [], tmp_path / "1")
    ddp = evaluate(tmp_path / "run", "ddp_cpu", [], tmp_path / "2")
    assert single["val/bleu"] > 5, "the model translates: BLEU far from 0 makes the comparison meaningful"
    for key in ("val/loss", "val/perplexity", "val/bleu", "val/chrf"):
        assert ddp[key] == pytest.approx(single[key], rel=1e-5), key
