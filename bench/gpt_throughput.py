"""Training throughput of `src/train.py experiment=gpt_shakespeare_char_cpu` vs a plain PyTorch loop.

Both train the same GPT (4 layers, 4 heads, 128 dims, block 64) on tiny shakespeare with batch 12,
AdamW (decay on matrices), warm-up + cosine LR and gradient clipping, in this one process, in
alternating rounds (bench/train_overhead.py's gpt family: the same batches from the same data module,
best round of each side); genlab runs with its default callbacks, logger and progress bar. Model FLOP utilisation: tokens/s x FLOPs per token
(nanoGPT's 6N + 12 L H Q T) over the best FLOP/s of a 1024^3 fp32 matmul measured in the same run.
Without --quick, genlab then trains the full 2000-step experiment and reports the validation loss it
reaches (nanoGPT: ~1.88).

    python bench/gpt_throughput.py --data ../shared/data/tinyshakespeare/input.txt [--quick]
"""

import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHAKESPEARE, compose_train, genlab_train  # noqa: E402
from _results import bench_parser, report  # noqa: E402
from train_overhead import bench_family  # noqa: E402

from genlab.data.text import TextFileDataModule  # noqa: E402
from genlab.nets.gpt import GPT  # noqa: E402

BATCH, BLOCK = 12, 64
ARCH = {"n_layer": 4, "n_head": 4, "n_embd": 128}  # as experiment=gpt_shakespeare_char_cpu


def flops_per_token(non_embedding_params: int) -> int:
    """nanoGPT's ``estimate_mfu``: 6N + 12 L H Q T FLOPs per token for forward + backward."""
    layers, heads, head_dim = ARCH["n_layer"], ARCH["n_head"], ARCH["n_embd"] // ARCH["n_head"]
    return 6 * non_embedding_params + 12 * layers * heads * head_dim * BLOCK


def matmul_peak(n: int = 1024, repeats: int = 20) -> float:
    """The CPU's "peak": best FLOP/s (2 n^3 per product) of an n x n @ n x n fp32 matmul."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--data", default=str(SHAKESPEARE))
    args = parser.parse_args()
    data = Path(args.data)
    warmup, steps, rounds = (10, 60, 2) if args.quick else (20, 150, 5)

    peak = matmul_peak()
    timing = bench_family("gpt", data, warmup, steps, rounds)  # genlab vs plain loop, alternating rounds
    peak = max(peak, matmul_peak())  # before and after: the better of two samples of a noisy machine
    dm = TextFileDataModule(path=str(data), block_size=BLOCK)
    dm.setup()
    flops = flops_per_token(GPT(dm.vocab_size, block_size=BLOCK, **ARCH).num_params())
    baseline, ours = (timing[f"{side}_steps_per_s"] * BATCH * BLOCK for side in ("plain", "genlab"))
    result = {
        "plain_tokens_per_s": round(baseline),
        "genlab_tokens_per_s": round(ours),
        "ratio": timing["ratio"],
        "timed_steps": steps,
        "rounds": rounds,
        "batch": BATCH,
        "block": BLOCK,
        "flops_per_token": flops,
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "plain_gflops": round(baseline * flops / 1e9, 2),
        "genlab_gflops": round(ours * flops / 1e9, 2),
        "plain_mfu": round(baseline * flops / peak, 4),
        "genlab_mfu": round(ours * flops / peak, 4),
        "threads": torch.get_num_threads(),
    }
    if not args.quick:
        cfg = compose_train(
            ["experiment=gpt_shakespeare_char_cpu", f"data.path={data}", "callbacks.progress_bar=null"]
        )
        final = genlab_train(cfg)  # the whole 2000-step experiment, with validation
        result.update(
            val_loss=round(final["val/loss"], 4), val_perplexity=round(math.exp(final["val/loss"]), 3)
        )
    headline = (
        f"genlab / plain PyTorch tokens/s ratio: {result['ratio']:.3f} "
        f"(MFU genlab {result['genlab_mfu']:.1%}, plain {result['plain_mfu']:.1%} of a {peak / 1e9:.0f} GFLOP/s peak)"
    )
    report("gpt_throughput", args.quick, result, headline)


if __name__ == "__main__":
    main()
