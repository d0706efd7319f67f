"""DCGAN networks and GAN objectives."""

import pytest
import torch

from genlab.models import gan_losses
from genlab.models.gan import GAN
from genlab.nets.dcgan import Discriminator, Generator


@pytest.mark.parametrize(("channels", "resolution"), [(1, 32), (3, 32), (3, 64)])
def test_networks_are_sized_from_data(channels, resolution):
    g = Generator(latent_dim=8, channels=channels, resolution=resolution, width=8)
    d = Discriminator(channels=channels, resolution=resolution, width=8, norm="spectral")
    x = g(torch.randn(5, 8))
    assert x.shape == (5, channels, resolution, resolution)
    assert x.abs().max() <= 1.0
    assert d(x).shape == (5,)


def test_unsupported_resolution_names_the_fix():
    with pytest.raises(ValueError, match="data.resolution"):
        Generator(resolution=28)


def test_losses_prefer_correct_discriminator():
    real, fake = torch.full((4,), 3.0), torch.full((4,), -3.0)
    for kind in gan_losses.LOSSES:
        good = gan_losses.d_loss(kind, real, fake)
        bad = gan_losses.d_loss(kind, fake, real)
        assert good < bad, kind
        assert gan_losses.g_loss(kind, fake) > gan_losses.g_loss(kind, real), kind
    assert gan_losses.d_loss("hinge", real, fake) == 0.0


def test_gradient_penalty_is_zero_for_unit_gradient_critic():
    class Linear(torch.nn.Module):  # D(x) = sum(x) / sqrt(numel): gradient norm exactly 1
        def forward(self, x):
            return x.flatten(1).sum(1) / x[0].numel() ** 0.5

    real, fake = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    assert gan_losses.gradient_penalty(Linear(), real, fake).item() == pytest.approx(0.0, abs=1e-10)


def test_wgan_gp_with_batchnorm_discriminator_is_rejected():
    with pytest.raises(ValueError, match="model.discriminator.norm=none"):
        GAN(
            Generator(resolution=16, width=8),
            Discriminator(resolution=16, width=8, norm="batch"),
            loss="wgan_gp",
        )


def test_ema_tracks_generator_with_warmup():
    g = Generator(latent_dim=4, channels=1, resolution=8, width=4)
    model = GAN(g, Discriminator(channels=1, resolution=8, width=4), ema_decay=0.5)
    before = [p.clone() for p in model.g_ema.module.parameters()]
    expected = 0.0
    for step in range(1, 30):
        with torch.no_grad():
            for p in g.parameters():
                p.add_(1.0)
        model.g_ema.update(g)
        n = step - 1  # updates before this one; the first update copies
        decay = 0.0 if n == 0 else min(0.5, (1 + n) / (10 + n))
        expected = decay * expected + (1 - decay) * step
    after = list(model.g_ema.module.parameters())
    assert all(torch.allclose(a, b + expected, atol=1e-5) for a, b in zip(after, before))
    assert 28 < expected < 29, "after warm-up the EMA lags the weights by decay / (1 - decay) steps"
    assert not any(p.requires_grad for p in model.g_ema.parameters())
