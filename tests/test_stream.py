"""Streaming sharded data: WebDataset shards written from MNIST by ``src/shard.py`` train under
``trainer.devices=2`` with every sample seen exactly once per epoch, resume mid-epoch exactly, and train to the
same parameters when served over HTTP from a local server."""

import json
import sys
from pathlib import Path

import pytest
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

from genlab.data.stream import (
    ShardedImageDataModule,
    ShardStream,
    decode_image,
    expand_urls,
    plan_epoch,
    read_index,
    served_per_worker,
)
from genlab.families import FAMILIES
from genlab.pipeline import train
from tests.conftest import DATA, ROOT, compose_train, local_server, run_script
from tests.probes import PreemptAtStep, image_digest
from tests.test_reliability import assert_same_tensors, load

TRAIN, VAL = "train-{000000..000003}.tar", "val-{000000..000001}.tar"  # 1000 = 3 x 300 + 100; 500 = 300 + 200


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    if not (DATA / "MNIST").is_dir():
        pytest.skip(f"{DATA} lacks MNIST: set GENLAB_SHARED")
    out = tmp_path_factory.mktemp("shards")
    args = [f"data.root={DATA}", f"out={out}", "shard_size=300", "max_samples=1000", "splits=[train,val]"]
    run_script("shard.py", [*args, f"hydra.run.dir={out / 'log'}"], out)
    return out


def stream_args(train_urls: str, val_urls: str, *extra: str) -> list[str]:
    return [
        "model=vae",
        *FAMILIES["vae"].small,
        "data=webdataset",
        f'data.urls="{train_urls}"',
        f'data.val_urls="{val_urls}"',
        "data.shuffle_buffer=100",
        "metrics=null",
        "optimized_metric=null",
        "callbacks.progress_bar=null",
        *extra,
    ]


def shard_digests(folder: Path, pattern: str) -> list[str]:
    urls = expand_urls(str(folder / pattern))
    stream = ShardStream(urls, read_index(urls)[0], 1, 1, 32, False, False, 0, 0)
    return [image_digest(decode_image(s["png"], 1, 32)) for s in stream._samples(0, 10**9, range(len(urls)))]


def test_the_shard_writer_counts_and_labels(shards):
    index = json.loads((shards / "index.json").read_text())
    assert [index["shards"][f"train-{i:06d}.tar"] for i in range(4)] == [300] * 3 + [100]
    assert index["class_names"] == [str(d) for d in range(10)] and index["resolution"] == 32


def test_the_split_serves_every_sample_once_with_equal_batches_per_rank():
    counts = [300] * 6 + [203]  # 2003 samples: ranks get 1002 and 1001
    for world in (1, 2, 3):
        plans = [plan_epoch(counts, 0, 1, True, r, world, 64) for r in range(world)]
        assert len({len(p.batch_sizes) for p in plans}) == 1, "the same number of batches on every rank"
        assert sum(sum(p.batch_sizes) for p in plans) == 2003
        assert [p.start for p in plans] == [sum(sum(q.batch_sizes) for q in plans[:r]) for r in range(world)]
    # the DataLoader takes batches round-robin over workers that still have some
    assert served_per_worker(5, [3, 4]) == [3, 2] and served_per_worker(5, [2, 5]) == [2, 3]


def test_an_epoch_under_ddp_sees_every_sample_exactly_once(shards, tmp_path):
    args = stream_args(str(shards / TRAIN), str(shards / VAL), "trainer=ddp_cpu", "trainer.devices=2")
    args += ["data.num_workers=2", "trainer.max_epochs=1", "+trainer.limit_val_batches=1"]
    args += ["+callbacks.seen._target_=tests.probes.SeenSamples", f"+callbacks.seen.path={tmp_path}"]
    run_script("train.py", [*args, f"hydra.run.dir={tmp_path}"], tmp_path, env={"PYTHONPATH": str(ROOT)})
    ranks = [json.loads((tmp_path / f"seen-rank{r}.json").read_text())["0"] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 500, "each rank trains on half of the epoch"
    assert sorted(ranks[0] + ranks[1]) == sorted(shard_digests(shards, TRAIN)), "each sample exactly once"


def test_resume_mid_epoch_reproduces_the_uninterrupted_run(shards, tmp_path):
    args = stream_args(str(shards / TRAIN), str(shards / VAL), "trainer=cpu", "data.num_workers=2")
    args += ["data.batch_size=128", "trainer.max_epochs=2", "+trainer.limit_val_batches=1"]  # 2 x 8 steps
    train(compose_train(args, tmp_path / "straight"))
    with pytest.raises(SIGTERMException):  # preempted at step 12: batch 4 of the second epoch
        train(compose_train(args, tmp_path / "stopped"), extra_callbacks=[PreemptAtStep(12)])
    stopped = load(tmp_path / "stopped" / "checkpoints" / "last.ckpt")
    assert stopped["ShardedImageDataModule"] == {"epoch": 1, "batches": 4}
    train(compose_train([*args, f"ckpt_path={tmp_path / 'stopped'}"], tmp_path / "resumed"))
    straight = load(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    resumed = load(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert straight["global_step"] == resumed["global_step"] == 16
    for key in ("state_dict", "optimizer_states", "lr_schedulers"):
        assert_same_tensors(straight[key], resumed[key], key)


@pytest.mark.long  # three 2-process runs; the single-process resume above covers the same stream state in CI
def test_resume_mid_epoch_under_ddp_reproduces_the_uninterrupted_run(shards, tmp_path):
    args = stream_args(str(shards / TRAIN), str(shards / VAL), "trainer=ddp_cpu", "trainer.devices=2")
    args += [
        "data.num_workers=2",
        "data.batch_size=64",
        "trainer.max_epochs=2",
        "+trainer.limit_val_batches=1",
    ]
    env = {"PYTHONPATH": str(ROOT)}  # 2 x 8 steps; preempted at step 12: batch 4 of the second epoch
    run_script("train.py", [*args, f"hydra.run.dir={tmp_path / 'straight'}"], tmp_path, env=env)
    preempt = ["+callbacks.preempt._target_=tests.probes.PreemptAtStep", "+callbacks.preempt.step=12"]
    stopped = run_script(
        "train.py", [*args, *preempt, f"hydra.run.dir={tmp_path / 'stopped'}"], tmp_path, env=env, check=False
    )
    assert load(tmp_path / "stopped" / "checkpoints" / "last.ckpt")["global_step"] == 12, stopped.stderr[
        -2000:
    ]
    resume = [f"ckpt_path={tmp_path / 'stopped'}", f"hydra.run.dir={tmp_path / 'resumed'}"]
    run_script("train.py", [*args, *resume], tmp_path, env=env)
    straight = load(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    resumed = load(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert (
        straight["ShardedImageDataModule"] == resumed["ShardedImageDataModule"] == {"epoch": 1, "batches": 8}
    )
    for key in ("state_dict", "optimizer_states", "lr_schedulers"):
        assert_same_tensors(straight[key], resumed[key], key)


@pytest.fixture
def http_server(shards):
    serve = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(shards)]
    with local_server(lambda port: [*serve, str(port)], "/index.json") as url:
        yield url


def test_shards_over_http_train_to_the_same_parameters_as_from_disk(shards, http_server, tmp_path):
    extra = ["trainer=cpu", "data.num_workers=2", "trainer.max_steps=12", "+trainer.limit_val_batches=1"]
    train(compose_train(stream_args(str(shards / TRAIN), str(shards / VAL), *extra), tmp_path / "disk"))
    train(
        compose_train(
            stream_args(f"{http_server}/{TRAIN}", f"{http_server}/{VAL}", *extra), tmp_path / "http"
        )
    )
    disk = load(tmp_path / "disk" / "checkpoints" / "last.ckpt")["state_dict"]
    http = load(tmp_path / "http" / "checkpoints" / "last.ckpt")["state_dict"]
    assert_same_tensors(disk, http, "state_dict")
    assert any(not torch.equal(v, w) for v, w in zip(disk.values(), load_initial(tmp_path).values()))


def load_initial(tmp_path: Path) -> dict:
    """The untrained weights of the same seed (the runs above did train)."""
    from hydra.utils import instantiate

    cfg = compose_train(stream_args("a.tar", "b.tar"), tmp_path / "init")
    torch.manual_seed(cfg.seed)
    return instantiate(cfg.model, _convert_="all").state_dict()


def test_labelled_shards_train_a_conditional_model(shards, tmp_path):
    args = stream_args(str(shards / TRAIN), str(shards / VAL), "trainer=cpu", "data.labels=true")
    args += [
        "data.batch_size=250",
        "trainer.max_epochs=1",
        "+trainer.limit_val_batches=1",
        "data.num_workers=0",
    ]
    args += ["callbacks.sample_accuracy.classifier_steps=30", "callbacks.sample_accuracy.num_samples=20"]
    metrics = train(compose_train(args, tmp_path))
    assert 0 <= metrics["val/sample_accuracy"] <= 1, (
        "the class count reached the model; the classifier trained"
    )
    names = ShardedImageDataModule.class_names_from_checkpoint(
        torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    )
    assert names == [str(c) for c in range(10)], "the shards' class names, for sample.py labels=[<name>]"
