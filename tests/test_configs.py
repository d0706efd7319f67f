"""Hydra composes every option of every config group; unknown options fail with Hydra's error."""

from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from genlab.checks import ConfigError
from genlab.pipeline import train
from tests.conftest import CONF, compose_train

GROUPS = [
    "model",
    "data",
    "trainer",
    "logger",
    "callbacks",
    "experiment",
    "hparams_search",
    "debug",
    "paths",
    "hydra",
]
TEXT_DATA = ("text_docs", "text_file", "parallel")
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


def test_every_group_has_options():
    assert {g for g, _ in OPTIONS} == set(GROUPS)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_resolves(group, option, tmp_path):
    overrides = [f"{group}={option}"]
    if group == "data" and option == "image_folder":
        overrides.append(f"data.root={tmp_path}")
    if option in TEXT_DATA or (
        group in ("model", "hparams_search") and option.startswith("gpt")
    ):  # text models and text data go together
        overrides += ["model=gpt"] if group == "data" else ["data=text_docs"]
    if option == "text_file":
        overrides.append(f"data.path={tmp_path}/corpus.txt")
    if option == "parallel":
        overrides.append(f"data.root={tmp_path}")
    cfg = compose_train(overrides, tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if cfg.model.get("net") and "vocab_size" in cfg.model.net:
        cfg.model.net.vocab_size = 97  # else the trained tokenizer's, filled in by the pipeline
    model = instantiate(cfg.model, _convert_="all")
    assert type(model) is get_class(cfg.model._target_)
    assert model.hparams.lr == cfg.model.lr, "the configured values reach the model"
    if group == "experiment":
        assert set(resolved["tags"]) - {"dev"}, "experiments tag their runs"
    if group == "trainer":
        trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
        assert trainer_cfg["_target_"] == "pytorch_lightning.Trainer"


@pytest.mark.parametrize("option", [p.stem for p in sorted((CONF / "logger").glob("*.yaml"))])
def test_loggers_instantiate_offline(option, tmp_path):
    cfg = compose_train([f"logger={option}"], tmp_path)
    nodes = list(cfg.logger.values())
    loggers = [instantiate(node) for node in nodes]
    assert {"many": 3}.get(option, 1) == len(loggers)
    for node, logger in zip(nodes, loggers):
        assert type(logger) is get_class(node._target_)
        expected = (
            node.save_dir if "save_dir" in node else Path(cfg.paths.output_dir) / "mlruns"
        )  # mlflow's file store
        assert Path(logger.save_dir) == Path(expected), "the configured save_dir"


@pytest.mark.parametrize("option", ["cpu", "default", "ddp_cpu"])
def test_trainer_options_instantiate(option, tmp_path):
    cfg = compose_train([f"trainer={option}", "trainer.precision=bf16-mixed"], tmp_path)
    trainer = instantiate(cfg.trainer)
    assert trainer.precision == "bf16-mixed"
    if option == "ddp_cpu":
        assert trainer.num_devices == 2 and trainer.strategy.process_group_backend == "gloo"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model=no_such_model", "Could not find 'model/no_such_model'"),
        ("trainer=tpu9", "Could not find 'trainer/tpu9'"),
    ],
)
def test_unknown_option_fails_clearly(override, message, tmp_path):
    with pytest.raises(ConfigCompositionException) as err:
        compose_train([override], tmp_path)
    assert message in str(err.value) and "Available options" in str(err.value)


def test_unknown_key_fails_clearly(tmp_path):
    with pytest.raises(ConfigCompositionException, match="model.no_such_key"):
        compose_train(["model.no_such_key=1"], tmp_path)


GPU_ONLY_SKIP = pytest.mark.skipif(
    torch.cuda.is_available(), reason="the message is for machines without a GPU"
)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer=cpu", "trainer.precision=16-mixed"], "needs a CUDA GPU"),
        (["trainer.precision=fp8"], "trainer.precision=fp8 is unknown"),
        (["trainer=fsdp"], "manual optimization"),  # the default model is the GAN
        pytest.param(["trainer=fsdp", "model=gpt", "data=text_docs"], "needs CUDA GPUs", marks=GPU_ONLY_SKIP),
        pytest.param(["trainer=gpu"], "no CUDA GPU is visible", marks=GPU_ONLY_SKIP),
    ],
)
def test_invalid_trainer_combinations_fail_at_start_up(overrides, message, tmp_path):
    cfg = compose_train(overrides, tmp_path)
    with pytest.raises(ConfigError, match=message):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists(), "nothing was trained"


def test_fsdp_wraps_each_transformer_block(tmp_path):
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    from genlab.nets.gpt import Block

    cfg = compose_train(["trainer=fsdp", "model=gpt", "data=text_docs"], tmp_path)
    strategy = instantiate(cfg.trainer.strategy)
    policy = strategy.kwargs["auto_wrap_policy"]
    assert isinstance(policy, ModuleWrapPolicy) and Block in policy._module_classes
    assert strategy.sharding_strategy.name == "FULL_SHARD"


def test_slurm_trainer_takes_ranks_from_the_allocation(tmp_path, monkeypatch):
    from pytorch_lightning.plugins.environments import SLURMEnvironment
    from pytorch_lightning.utilities import rank_zero_only

    slurm = {"SLURM_NTASKS": "4", "SLURM_JOB_NAME": "train", "SLURM_JOB_NUM_NODES": "2"}
    slurm |= {"SLURM_NTASKS_PER_NODE": "2", "SLURM_NODEID": "1", "SLURM_PROCID": "3", "SLURM_LOCALID": "1"}
    slurm |= {"SLURM_NODELIST": "node[1-2]", "SLURM_JOB_ID": "42"}
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)  # the Trainer sets it process-wide
    cfg = compose_train(
        ["trainer=slurm", "trainer.accelerator=cpu", "trainer.sync_batchnorm=false"], tmp_path
    )
    trainer = instantiate(cfg.trainer, _convert_="all")
    env = trainer.strategy.cluster_environment
    assert isinstance(env, SLURMEnvironment) and env.auto_requeue
    assert (trainer.num_nodes, trainer.num_devices, trainer.world_size) == (2, 2, 4)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank) == (3, 1, 1)


def test_slurm_launcher_config_composes(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train", ["hydra/launcher=slurm", "hydra.launcher.tasks_per_node=8"], return_hydra_config=True
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.max_num_timeout) == (8, 8, 3)
