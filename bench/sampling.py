"""DDIM with K steps vs ancestral DDPM with T steps: wall time ratio against K/T, same model and batch;
DPM-Solver++(2M) with K steps timed beside DDIM (one network call per step, like DDIM).

    python bench/sampling.py            # T=1000, K=50, 32 px UNet (the diffusion_mnist sizes at width 32)
    python bench/sampling.py --quick    # T=200, K=20, smaller UNet (CI)

Writes bench/results/sampling[_quick].json and prints the ratio last.
"""

import time

import torch
from _results import bench_parser, report

from genlab.models.diffusion import Diffusion
from genlab.nets.unet import UNet


def timed(fn) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    T, K, width = (200, 20, 16) if args.quick else (1000, 50, 32)

    torch.manual_seed(0)
    net = UNet(
        1, 32, width=width, channel_mults=(1, 2, 2), num_res_blocks=1, attention_resolutions=(8,), dropout=0.0
    )
    model = Diffusion(net, timesteps=T, ema_decay=None).eval()

    def sample(sampler: str, seed: int = 0) -> torch.Tensor:
        return model.sample(args.batch, torch.Generator().manual_seed(seed), sampler=sampler, steps=K)

    sample("ddim")  # warm-up
    ddpm_s, _ = timed(lambda: sample("ddpm"))
    ddim_s, first = timed(lambda: sample("ddim"))
    dpmpp_s, _ = timed(lambda: sample("dpmpp_2m"))
    deterministic = torch.equal(first, sample("ddim"))
    result = {
        "timesteps": T,
        "ddim_steps": K,
        "batch": args.batch,
        "unet_width": width,
        "ddpm_seconds": round(ddpm_s, 3),
        "ddim_seconds": round(ddim_s, 3),
        "dpmpp_2m_seconds": round(dpmpp_s, 3),
        "time_ratio": round(ddim_s / ddpm_s, 4),
        "dpmpp_2m_ddim_time_ratio": round(dpmpp_s / ddim_s, 4),
        "steps_ratio": K / T,
        "ddim_deterministic": deterministic,
        "device": "cpu",
        "threads": torch.get_num_threads(),
    }
    report(
        "sampling",
        args.quick,
        result,
        f"DDIM/DDPM time ratio: {result['time_ratio']:.4f} (K/T = {K / T:.4f}), deterministic: {deterministic}",
    )


if __name__ == "__main__":
    main()
