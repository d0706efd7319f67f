"""Diffusion building blocks: the noise process (:mod:`.schedule`) and the samplers (:mod:`.samplers`)."""

from genlab.diffusion.samplers import DDIM, DDPM, SAMPLERS, DPMSolverPP2M, Sampler, make_sampler, sample_loop
from genlab.diffusion.schedule import PREDICTIONS, SCHEDULES, NoiseSchedule, beta_schedule

__all__ = [
    "DDIM",
    "DDPM",
    "PREDICTIONS",
    "SAMPLERS",
    "SCHEDULES",
    "DPMSolverPP2M",
    "NoiseSchedule",
    "Sampler",
    "beta_schedule",
    "make_sampler",
    "sample_loop",
]
