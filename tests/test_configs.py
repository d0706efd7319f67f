"""Hydra composes every option of every config group; unknown options fail with Hydra's error."""

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

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
    if option in TEXT_DATA or option in ("gpt", "gpt_optuna"):  # text models and text data go together
        overrides += ["model=gpt"] if group == "data" else ["data=text_docs"]
    if option == "text_file":
        overrides.append(f"data.path={tmp_path}/corpus.txt")
    if option == "parallel":
        overrides.append(f"data.root={tmp_path}")
    cfg = compose_train(overrides, tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["model"]["_target_"].startswith("genlab.")
    if group == "experiment":
        assert set(resolved["tags"]) - {"dev"}, "experiments tag their runs"
    if group == "trainer":
        trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
        assert trainer_cfg["_target_"] == "pytorch_lightning.Trainer"


@pytest.mark.parametrize("option", [p.stem for p in sorted((CONF / "logger").glob("*.yaml"))])
def test_loggers_instantiate_offline(option, tmp_path):
    cfg = compose_train([f"logger={option}"], tmp_path)
    loggers = [instantiate(node) for node in cfg.logger.values()]
    assert loggers and all(hasattr(lg, "log_metrics") for lg in loggers)


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
