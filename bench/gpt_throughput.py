"""Training throughput of `src/train.py experiment=gpt_shakespeare_char_cpu` vs a plain PyTorch loop.

Both train the same GPT (4 layers, 4 heads, 128 dims, block 64) on tiny shakespeare with batch 12,
AdamW (decay on matrices), warm-up + cosine LR and gradient clipping, in this one process. Tokens
per second are timed over the same steps after a warm-up; genlab runs with its default callbacks,
logger and progress bar (validation is outside the timed window). Without --quick, genlab then
trains the full 2000-step experiment and reports the validation loss it reaches (nanoGPT: ~1.88).

    python bench/gpt_throughput.py --data ../shared/data/tinyshakespeare/input.txt [--quick]
"""

import math
import os
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GENLAB_ROOT", str(ROOT))

from _results import bench_parser, report  # noqa: E402

from genlab.data.text import TextFileDataModule  # noqa: E402
from genlab.models.schedules import make_schedule  # noqa: E402
from genlab.nets.gpt import GPT  # noqa: E402
from genlab.pipeline import train  # noqa: E402

BATCH, BLOCK = 12, 64


class StepTimer(pl.Callback):
    """Wall time from the start of training batch ``start`` to the end of batch ``stop - 1``."""

    def __init__(self, start: int, stop: int):
        self.start, self.stop, self.seconds = start, stop, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.start:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.stop:
            self.seconds = time.perf_counter() - self.t0


def plain_pytorch(data: Path, warmup: int, steps: int) -> float:
    """nanoGPT-style loop: random windows, forward, backward, clip, step; returns tokens/s."""
    dm = TextFileDataModule(path=str(data), block_size=BLOCK)
    dm.setup()
    tokens = dm.train_tokens.long()
    torch.manual_seed(0)
    net = GPT(dm.vocab_size, block_size=BLOCK, n_layer=4, n_head=4, n_embd=128, dropout=0.0)
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
    return steps * BATCH * BLOCK / (time.perf_counter() - t0)


def genlab_run(data: Path, overrides: list[str], callbacks: list[pl.Callback] | None = None) -> dict:
    """`src/train.py experiment=gpt_shakespeare_char_cpu` composed and run in this process."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train", overrides=["experiment=gpt_shakespeare_char_cpu", f"data.path={data}", *overrides]
        )
    with open_dict(cfg):
        cfg.paths.output_dir = tempfile.mkdtemp(prefix="genlab_bench_")
    return train(cfg, extra_callbacks=callbacks)


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/tinyshakespeare/input.txt"))
    args = parser.parse_args()
    data = Path(args.data)
    warmup, steps = (20, 60) if args.quick else (50, 300)

    baseline = plain_pytorch(data, warmup, steps)
    timer = StepTimer(warmup, warmup + steps)
    genlab_run(
        data,
        [
            f"trainer.max_steps={warmup + steps}",
            "trainer.val_check_interval=100000",
            "trainer.limit_val_batches=0",
        ],
        callbacks=[timer],
    )
    ours = steps * BATCH * BLOCK / timer.seconds
    result = {
        "plain_tokens_per_s": round(baseline),
        "genlab_tokens_per_s": round(ours),
        "ratio": round(ours / baseline, 3),
        "timed_steps": steps,
        "batch": BATCH,
        "block": BLOCK,
    }
    if not args.quick:
        final = genlab_run(data, ["callbacks.progress_bar=null"])
        result.update(
            val_loss=round(final["val/loss"], 4), val_perplexity=round(math.exp(final["val/loss"]), 3)
        )
    report(
        "gpt_throughput", args.quick, result, f"genlab / plain PyTorch tokens/s ratio: {result['ratio']:.3f}"
    )


if __name__ == "__main__":
    main()
