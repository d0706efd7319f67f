"""Training throughput of `src/train.py experiment=gpt_shakespeare_char_cpu` vs a plain PyTorch loop.

Both train the same GPT (4 layers, 4 heads, 128 dims, block 64) on tiny shakespeare with batch 12,
AdamW (decay on matrices), warm-up + cosine LR and gradient clipping, in this one process. Tokens
per second are timed over the same steps after a warm-up; genlab runs with its default callbacks,
logger and progress bar (validation off). Model FLOP utilisation: tokens/s x FLOPs per token
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHAKESPEARE, BatchTimer, compose_train, genlab_train  # noqa: E402
from _results import bench_parser, report  # noqa: E402

from genlab.data.text import TextFileDataModule  # noqa: E402
from genlab.models.schedules import make_schedule  # noqa: E402
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


def plain_pytorch(data: Path, warmup: int, steps: int) -> tuple[float, int]:
    """nanoGPT-style loop: random windows, forward, backward, clip, step; (tokens/s, non-embedding params)."""
    dm = TextFileDataModule(path=str(data), block_size=BLOCK)
    dm.setup()
    tokens = dm.train_tokens.long()
    torch.manual_seed(0)
    net = GPT(dm.vocab_size, block_size=BLOCK, **ARCH, dropout=0.0)
    decay = [p for p in net.parameters() if p.dim() >= 2]
    no_decay = [p for p in net.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=2e-3,  # as experiment=gpt_shakespeare_char_cpu
        betas=(0.9, 0.99),
    )
    sched = make_schedule(opt, "cosine", 2000, 100, 0.1)
    net.train()
    for step in range(warmup + steps):
        if step == warmup:
            t0 = time.perf_counter()
        ix = torch.randint(len(tokens) - BLOCK - 1, (BATCH,))
        x = torch.stack([tokens[i : i + BLOCK] for i in ix])
        y = torch.stack([tokens[i + 1 : i + BLOCK + 1] for i in ix])
        logits, _ = net(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
    return steps * BATCH * BLOCK / (time.perf_counter() - t0), net.num_params()


def genlab_run(data: Path, overrides: list[str], callbacks: list | None = None) -> dict[str, float]:
    """`src/train.py experiment=gpt_shakespeare_char_cpu` composed and run in this process."""
    cfg = compose_train(["experiment=gpt_shakespeare_char_cpu", f"data.path={data}", *overrides])
    return genlab_train(cfg, callbacks)


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--data", default=str(SHAKESPEARE))
    args = parser.parse_args()
    data = Path(args.data)
    warmup, steps = (20, 60) if args.quick else (50, 300)

    peak = matmul_peak()
    baseline, params = plain_pytorch(data, warmup, steps)
    timer = BatchTimer(warmup, warmup + steps)
    overrides = ["++trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0"]
    genlab_run(data, [f"trainer.max_steps={warmup + steps}", *overrides], callbacks=[timer])
    peak = max(peak, matmul_peak())  # before and after: the better of two samples of a noisy machine
    ours = steps * BATCH * BLOCK / timer.seconds
    flops = flops_per_token(params)
    result = {
        "plain_tokens_per_s": round(baseline),
        "genlab_tokens_per_s": round(ours),
        "ratio": round(ours / baseline, 3),
        "timed_steps": steps,
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
        final = genlab_run(data, ["callbacks.progress_bar=null"])
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
