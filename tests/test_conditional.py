"""Class-conditional diffusion with classifier-free guidance: guidance scales 0 and 1 are the unconditional
and conditional predictions; a conditional run trains on labelled data and samples the classes asked for."""

import pytest
import torch
from omegaconf import OmegaConf

from genlab.diffusion import Guided, drop_labels
from genlab.errors import ConfigError
from genlab.nets.unet import UNet
from genlab.pipeline import sample, train
from tests.conftest import compose_train, quick_run


def test_guidance_zero_is_unconditional_one_conditional_and_between_is_the_cfg_mix():
    torch.manual_seed(0)
    net = UNet(
        channels=1, resolution=8, width=8, channel_mults=(1, 2), num_res_blocks=1, dropout=0.0, num_classes=3
    )
    for p in net.head.parameters():  # the zero-initialised head would make every output 0
        torch.nn.init.normal_(p, std=0.1)
    net.eval()
    x, t, labels = torch.randn(4, 1, 8, 8), torch.tensor([0, 10, 50, 99]), torch.tensor([0, 1, 2, 1])
    cond, uncond = net(x, t, labels), net(x, t, None)
    assert not torch.allclose(cond, uncond), "the class changes the prediction"
    assert torch.equal(Guided(net, labels, 0.0)(x, t), uncond)
    assert torch.equal(Guided(net, labels, 1.0)(x, t), cond)
    torch.testing.assert_close(Guided(net, labels, 3.0)(x, t), uncond + 3.0 * (cond - uncond))
    assert torch.equal(uncond, net(x, t, torch.full_like(labels, net.null_label)))

    dropped = drop_labels(torch.zeros(10_000, dtype=torch.long), 3, 0.1, torch.Generator().manual_seed(0))
    assert abs((dropped == 3).float().mean().item() - 0.1) < 0.01


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cdiffusion")
    metrics = train(compose_train([*quick_run("diffusion"), "data.labels=true", "model.sample_steps=4"], run))
    return run, metrics


def sample_cfg(run, out, args):
    out.mkdir(parents=True)  # Hydra's run dir
    cfg = compose_train([f"ckpt_path={run}", "device=cpu", "sampler=ddim", "steps=4", *args], out, "sample")
    OmegaConf.set_struct(cfg, False)
    return cfg


def test_a_conditional_diffusion_run_samples_the_classes_asked_for(conditional_run, tmp_path):
    run, metrics = conditional_run
    assert torch.isfinite(torch.tensor(metrics["val/loss"]))
    out = sample(sample_cfg(run, tmp_path / "per_class", ["per_class=2", "guidance=3.0"]))
    assert (out / "labels.txt").read_text().split() == [str(c) for c in range(10) for _ in range(2)]
    assert len(list((out / "samples").glob("*.png"))) == 20 and (out / "grid.png").is_file()
    out = sample(sample_cfg(run, tmp_path / "labels", ["labels=[3,7]", "num_samples=5"]))
    assert (out / "labels.txt").read_text().split() == ["3", "7", "3", "7", "3"]


def test_conditioning_needs_labels_and_unconditional_models_refuse_classes(tmp_path):
    cfg = compose_train([*quick_run("diffusion"), "model.num_classes=10"], tmp_path / "run")
    with pytest.raises(ConfigError, match="data.labels=true"):
        train(cfg)
    unconditional = tmp_path / "uncond"
    train(compose_train([*quick_run("diffusion"), "trainer.max_epochs=1"], unconditional))
    with pytest.raises(ConfigError, match="unconditional"):
        sample(sample_cfg(unconditional, tmp_path / "s", ["labels=[1]"]))
