"""The noise process and the samplers of genlab.diffusion, and DPM-Solver++(2M) against DDIM on a trained model."""

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from genlab.diffusion import SAMPLERS, NoiseSchedule, make_sampler, sample_loop
from genlab.errors import ConfigError
from genlab.models.diffusion import Diffusion
from genlab.nets.unet import UNet


def random_unet(resolution: int = 8) -> UNet:
    """A small UNet whose (zero-initialised) head is made random: outputs vary with x and t."""
    torch.manual_seed(0)
    net = UNet(
        1, resolution, width=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(), dropout=0.0
    )
    nn.init.normal_(net.head[-1].weight, std=0.1)
    return net.eval()


class GaussianDenoiser(nn.Module):
    """The exact eps-prediction for data ~ N(0, s^2 I): its probability-flow ODE has a closed form."""

    def __init__(self, schedule: NoiseSchedule, s: float):
        super().__init__()
        self.ab, self.s2 = schedule.alpha_bar.double(), s * s

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, sigma = self.ab[t].sqrt()[:, None], (1 - self.ab[t]).sqrt()[:, None]
        x0 = a * self.s2 / (a * a * self.s2 + sigma * sigma) * x.double()
        return ((x.double() - a * x0) / sigma).float()


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("shape", [(6, 5), (6, 2, 4, 4)])
@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_target_inverts_to_x0_and_noise(prediction, shape, kind):
    schedule = NoiseSchedule(kind, 100)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(shape, generator=g) * 2 - 1, torch.randn(shape, generator=g)
    t = torch.tensor([0, 1, 20, 50, 90, 95])  # not the last steps: eps -> x0 divides by sqrt(ab) ~ 0
    x_t = schedule.add_noise(x0, noise, t)
    ab = schedule.alpha_bar[t].view(-1, *[1] * (len(shape) - 1))
    assert torch.allclose(x_t, ab.sqrt() * x0 + (1 - ab).sqrt() * noise)
    x0_hat, eps_hat = schedule.predict_x0_eps(schedule.target(x0, noise, t, prediction), x_t, t, prediction)
    assert x0_hat.shape == eps_hat.shape == shape
    assert torch.allclose(x0_hat, x0, atol=1e-4) and torch.allclose(eps_hat, noise, atol=1e-3)


def test_schedule_buffers_stay_out_of_checkpoints():
    model = Diffusion(random_unet(), timesteps=20, ema_decay=None)
    assert not [k for k in model.state_dict() if k.startswith("schedule.")]
    assert model.schedule.alpha_bar.dtype == torch.float32 and model.schedule.alpha_bar.shape == (20,)


def test_ddim_with_T_steps_is_every_timestep():
    model = Diffusion(random_unet(), timesteps=30, ema_decay=None).eval()
    ddim = model.sample(3, torch.Generator().manual_seed(4), sampler="ddim", steps=30)
    s = model.schedule
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        for t in reversed(range(30)):
            out = model.net(x, torch.full((3,), t)).float()
            x0, eps = s.predict_x0_eps(out, x, t, "eps")
            x = s.alpha_bar_prev[t].sqrt() * x0 + (1 - s.alpha_bar_prev[t]).sqrt() * eps
    assert torch.allclose(ddim, x.clamp(-1, 1), atol=1e-6)


@pytest.mark.parametrize("steps", [1, 2])
def test_dpmpp_2m_without_history_is_ddim(steps):
    """With at most two timesteps every DPM-Solver++(2M) step is first order, i.e. DDIM."""
    model = Diffusion(random_unet(), timesteps=30, prediction="v", ema_decay=None).eval()
    ddim, dpm = (
        model.sample(3, torch.Generator().manual_seed(1), sampler=k, steps=steps)
        for k in ("ddim", "dpmpp_2m")
    )
    assert torch.allclose(ddim, dpm, atol=1e-5)


class FirstInput(nn.Module):
    """Records the first x it is called with; predicts zero noise."""

    channels, resolution = 1, 8

    def __init__(self):
        super().__init__()
        self.first: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.first = x.clone() if self.first is None else self.first
        return torch.zeros_like(x)


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_starts_from_the_generators_first_draw(sampler):
    net = FirstInput()
    Diffusion(net, timesteps=10, ema_decay=None).sample(
        2, torch.Generator().manual_seed(7), sampler=sampler, steps=4
    )
    assert torch.equal(net.first, torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(7)))


def test_dpmpp_2m_solves_the_gaussian_ode_better_than_ddim():
    """Data ~ N(0, 0.4^2): the ODE's solution from x_T is x_T scaled, so the solver's error is measured exactly."""
    schedule, s = NoiseSchedule("linear", 1000), 0.4
    net = GaussianDenoiser(schedule, s)
    x_T = torch.randn(256, 16, generator=torch.Generator().manual_seed(0))
    ab = schedule.alpha_bar.double()
    z = x_T.double() / (ab[-1] * s**2 + 1 - ab[-1]).sqrt()
    exact = (ab[0].sqrt() * s**2 / (ab[0] * s**2 + 1 - ab[0]).sqrt() * z).float()  # x0 predicted at t = 0

    def error(name: str, steps: int) -> float:
        sampler = make_sampler(name, schedule, "eps")
        x = sample_loop(net, sampler, (256, 16), steps, torch.Generator().manual_seed(0))
        return (x - exact).abs().mean().item()

    # measured ratios 0.50 and 0.18 (0.86 at 10 steps: this ODE is hard for time-uniform steps)
    for steps in (20, 40):
        assert error("dpmpp_2m", steps) < 0.6 * error("ddim", steps), steps


def test_unknown_sampler_and_bad_steps_are_config_errors():
    with pytest.raises(ConfigError, match="Unknown sampler 'euler'; choose one of: ddpm, ddim, dpmpp_2m$"):
        make_sampler("euler", NoiseSchedule("linear", 10), "eps")
    with pytest.raises(ConfigError, match=r"model.sampler must be one of \('ddpm', 'ddim', 'dpmpp_2m'\)"):
        Diffusion(random_unet(), timesteps=10, sampler="euler")
    model = Diffusion(random_unet(), timesteps=10, ema_decay=None)
    with pytest.raises(ConfigError, match="Unknown sampler"):
        model.sample(1, sampler="euler")
    for steps in (0, 11):
        with pytest.raises(
            ConfigError, match=rf"DPM-Solver\+\+\(2M\) steps must be in \[1, 10\], got {steps}"
        ):
            model.sample(1, sampler="dpmpp_2m", steps=steps)
    assert model.sample(1, sampler="ddpm", steps=11).shape == (1, 1, 8, 8)  # ddpm takes all T steps
    with pytest.raises(ConfigError, match="unconditional") as error:
        model.sample(1, labels=torch.zeros(1, dtype=torch.long))
    assert "\n" not in str(error.value)


# ---- the Must-show: DPM-Solver++(2M) is closer to the probability-flow solution than DDIM ----
@pytest.fixture(scope="module")
def digits_diffusion() -> Iterator[Diffusion]:
    """A T = 1000 diffusion model trained here for 300 steps on scikit-learn's 8x8 digits (~15 s on 2 cores)."""
    from sklearn.datasets import load_digits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is as fast, and robust to a busy machine
    try:
        torch.manual_seed(0)
        images = torch.from_numpy(load_digits().images).float()[:, None] / 8 - 1  # [-1, 1]
        net = UNet(
            1, 8, width=16, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(), dropout=0.0
        )
        model = Diffusion(net, timesteps=1000, ema_decay=None)
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        g = torch.Generator().manual_seed(0)
        losses = []
        for _ in range(300):
            loss = model.loss(net, images[torch.randint(0, len(images), (64,), generator=g)], g)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert sum(losses[-20:]) / 20 < 0.2 * sum(losses[:10]) / 10, "the model learned to denoise"
        yield model.eval()
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_dpmpp_2m_is_closer_to_the_ode_solution_than_ddim(digits_diffusion):
    def sample(sampler: str, steps: int) -> torch.Tensor:
        return digits_diffusion.sample(16, torch.Generator().manual_seed(1), sampler=sampler, steps=steps)

    reference = sample("ddim", 1000)  # every timestep: the probability-flow ODE's solution from x_T
    assert reference.std(0).mean() > 0.2, "samples differ with x_T: the model is not trivial"
    for steps in (
        20,
        40,
    ):  # measured ratios 0.50, 0.18 (at 10 steps 0.86: this ODE is hard for time-uniform steps)
        error = {name: (sample(name, steps) - reference).abs().mean().item() for name in ("ddim", "dpmpp_2m")}
        print(f"mean |x - x_ref| at {steps} steps: {error}")
        assert error["dpmpp_2m"] < error["ddim"], (steps, error)
