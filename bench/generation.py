"""GPT generation with vs without the KV cache: same model, prompt and greedy tokens.

    python bench/generation.py            # nanoGPT shakespeare_char size (6x384, block 256), 200 new tokens
    python bench/generation.py --quick    # 4x128, block 128, 100 new tokens (CI)

Writes bench/results/generation[_quick].json and prints the speed-up last.
"""

import time

import torch
from _results import bench_parser, report

from genlab.nets.gpt import GPT


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    layers, width, block, new = (4, 128, 128, 100) if args.quick else (6, 384, 256, 200)

    torch.manual_seed(0)
    net = GPT(
        65, block_size=block, n_layer=layers, n_head=4 if args.quick else 6, n_embd=width, dropout=0.0
    ).eval()
    prompt = torch.randint(0, 65, (args.batch, 16))
    net.generate(prompt, 4)  # warm-up
    seconds, outputs = {}, {}
    for use_cache in (False, True):
        start = time.perf_counter()
        outputs[use_cache] = net.generate(prompt, new, temperature=0, use_cache=use_cache)
        seconds[use_cache] = time.perf_counter() - start
    result = {
        "model": f"{layers} layers x {width}, block {block}",
        "batch": args.batch,
        "new_tokens": new,
        "seconds_no_cache": round(seconds[False], 3),
        "seconds_kv_cache": round(seconds[True], 3),
        "speedup": round(seconds[False] / seconds[True], 2),
        "identical_tokens": bool(torch.equal(outputs[False], outputs[True])),
        "device": "cpu",
        "threads": torch.get_num_threads(),
    }
    report(
        "generation",
        args.quick,
        result,
        f"KV-cache speed-up: {result['speedup']:.2f}x, identical greedy tokens: {result['identical_tokens']}",
    )


if __name__ == "__main__":
    main()
