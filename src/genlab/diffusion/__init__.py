"""Diffusion building blocks: the noise process (:mod:`.schedule`), the samplers (:mod:`.samplers`) and
classifier-free guidance (:mod:`.guidance`)."""

from genlab.diffusion.guidance import Guided, drop_labels
from genlab.diffusion.samplers import DDIM, DDPM, SAMPLERS, DPMSolverPP2M, Sampler, make_sampler, sample_loop
from genlab.diffusion.schedule import PREDICTIONS, SCHEDULES, NoiseSchedule, beta_schedule

__all__ = [
    "DDIM",
    "DDPM",
    "PREDICTIONS",
    "SAMPLERS",
    "SCHEDULES",
    "DPMSolverPP2M",
    "Guided",
    "NoiseSchedule",
    "Sampler",
    "beta_schedule",
    "drop_labels",
    "make_sampler",
    "sample_loop",
]
