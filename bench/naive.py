"""The pipeline versus the naive way: one transformers `generate` call after another, as the original project ran it.

    python bench/naive.py [--prompts 64] [--naive-prompts 16] [--max-tokens 48] [--quick]

Pipeline side: the `pipeline` benchmark's run (every conversation at once through gateway → Redis → worker →
`vllm serve`; a stack started here when --url does not answer). Naive side, after the stack is stopped (so it has
the machine's cores to itself): the same conversations — the first `--naive-prompts` of them, since it is slow —
with the same three prompts each (answer, critique, revision; ucai/prompts.py, the same principle per seed), each a
`model.generate` of the bundled model in transformers (fp32, greedy, the same token budget), one after another.

ratio = pipeline conversations/s ÷ naive conversations/s (the speed-up; goal ≥ 10×).
Writes bench/results/naive.json.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_stack_args, bench_prompts, print_table, stack, write_results  # noqa: E402


def naive_loop(prompts: list[str], max_tokens: int, rounds: int, device: str = "cpu",
               dtype: str = "float32", threads: int | None = None) -> dict:
    """The original project's loop: for each conversation, answer → critique → revision, one generate at a time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.cai.critique_revision import schedule_principles
    from ucai.constitutions.loader import load_constitutions
    from ucai.model_prepare import resolve_model_path
    from ucai.prompts import answer_messages, clean_output, critique_messages, revision_messages
    from ucai.schemas import ChatMessage

    if device == "cpu":
        torch.set_num_threads(threads or os.cpu_count() or 1)  # the whole machine: the stack is stopped by now
    path = resolve_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()
    constitution = load_constitutions()["ethical"]

    def generate(messages: list[dict[str, str]]) -> tuple[str, int]:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True).to(device)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False,
                                 pad_token_id=tokenizer.eos_token_id)
        new = out[0, ids["input_ids"].shape[1]:]
        return clean_output(tokenizer.decode(new, skip_special_tokens=True)), int(new.shape[0])

    generate([{"role": "user", "content": "Hello"}])  # warm-up
    tokens = calls = 0
    started = time.perf_counter()
    for seed, prompt in enumerate(prompts):
        conversation = [ChatMessage(role="user", content=prompt)]
        answer, n = generate(answer_messages(constitution, conversation))
        tokens, calls = tokens + n, calls + 1
        for _principle, pair in schedule_principles(constitution, None, rounds, random.Random(seed)):
            critique, n = generate(critique_messages(constitution, conversation, answer, pair))
            revision, m = generate(revision_messages(constitution, conversation, answer, pair, critique))
            tokens, calls = tokens + n + m, calls + 2
            answer = revision or answer
    wall = time.perf_counter() - started
    return {"wall_s": wall, "output_tokens": tokens, "model_calls": calls}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stack_args(parser)
    parser.add_argument("--prompts", type=int, default=64, help="conversations through the pipeline")
    parser.add_argument("--naive-prompts", type=int, default=16, help="of those, through the naive loop")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the naive loop (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="results file (default bench/results/naive.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.naive_prompts, args.max_tokens = 8, 2, 16
    from bench.pipeline import run_pipeline

    prompts = bench_prompts(args.prompts)
    with stack(args) as s:
        asyncio.run(run_pipeline(s.url, s.headers, prompts[:2], args))  # warm-up
        pipe = asyncio.run(run_pipeline(s.url, s.headers, prompts, args))
    pipe_tokens = sum(u["completion_tokens"] for u in pipe["usage"])
    naive = naive_loop(prompts[:args.naive_prompts], args.max_tokens, args.rounds, threads=args.threads)
    rows = [
        {"side": "pipeline (vllm serve, all at once)", "conversations": len(prompts),
         "wall_s": round(pipe["wall_s"], 1), "conv_per_s": round(len(prompts) / pipe["wall_s"], 3),
         "out_tok_per_s": round(pipe_tokens / pipe["wall_s"], 1)},
        {"side": "naive (transformers, sequential)", "conversations": args.naive_prompts,
         "wall_s": round(naive["wall_s"], 1), "conv_per_s": round(args.naive_prompts / naive["wall_s"], 3),
         "out_tok_per_s": round(naive["output_tokens"] / naive["wall_s"], 1)},
    ]
    ratio = (len(prompts) / pipe["wall_s"]) / (args.naive_prompts / naive["wall_s"])
    print_table(rows, ["side", "conversations", "wall_s", "conv_per_s", "out_tok_per_s"],
                title="pipeline vs the naive generate loop")
    print(f"speed-up {ratio:.1f}x conversations/s (goal >= 10x)")
    payload = {"rows": rows, "max_tokens": args.max_tokens, "rounds": args.rounds,
               "naive_threads": args.threads or os.cpu_count(), "naive_dtype": "float32",
               "token_ratio": round(rows[0]["out_tok_per_s"] / rows[1]["out_tok_per_s"], 2)}
    write_results("naive", payload, ratio, out=args.out)
    return payload


if __name__ == "__main__":
    main()
