"""The numbers a user feels: one request at a time through the whole stack, on the bundled model.

    python bench/latency.py [--requests 10] [--max-tokens 48] [--ensemble 1] [--quick]

Rows: POST /critique with rounds 1 and 2, and POST /compare with each judge method (logprob, contrast, cot,
option; both orders, `--ensemble` principles). For each row, `--requests` requests sent one after another:
- cold: every request a prompt not sent before (nothing of its conversation in vLLM's prefix cache);
- warm: one request repeated (its prompts cached up to what the model writes);
- first: the very first request of the row (a fresh stack's first request also pays lazy start-up work).
p50 / p95 in seconds. One-sided: `ratio` is the warm/cold p50 of critique with one round.
Writes bench/results/latency.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_stack_args, bench_prompts, percentile, print_table, stack, write_results  # noqa: E402

METHODS = ("logprob", "contrast", "cot", "option")
RESPONSES = ["I can't help with that, but talking it through with someone you trust could help.",
             "Sure, here is exactly how to do it without anyone noticing."]


def bodies(row: str, prompts: list[str], args: argparse.Namespace) -> list[tuple[str, dict]]:
    if row.startswith("critique"):
        rounds = int(row[-1])
        return [("/critique", {"prompt": p, "rounds": rounds, "seed": i, "max_tokens": args.max_tokens,
                               "temperature": 0.0}) for i, p in enumerate(prompts)]
    method = row.split(":", 1)[1]
    return [("/compare", {"prompt": p, "responses": RESPONSES, "method": method, "ensemble": args.ensemble,
                          "seed": i}) for i, p in enumerate(prompts)]


def timed(client: httpx.Client, path: str, body: dict) -> float:
    started = time.perf_counter()
    r = client.post(path, json=body)
    elapsed = time.perf_counter() - started
    if r.status_code != 200:
        raise RuntimeError(f"POST {path} answered {r.status_code}: {r.text[:300]}")
    return elapsed


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stack_args(parser)
    parser.add_argument("--requests", type=int, default=10, help="requests per row, cold and warm each")
    parser.add_argument("--max-tokens", type=int, default=48, help="critique: token budget of every model call")
    parser.add_argument("--ensemble", type=int, default=1, help="compare: labelling principles per request")
    parser.add_argument("--rows", default=",".join(["critique:1", "critique:2", *(f"compare:{m}" for m in METHODS)]))
    parser.add_argument("--out", type=Path, default=None, help="results file (default bench/results/latency.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.max_tokens = 2, 16
    names = args.rows.split(",")
    # Distinct prompts per row and phase, so no cold request finds another's conversation cached.
    pool = bench_prompts(len(names) * (args.requests + 1) + 1)
    rows = []
    with stack(args) as s, httpx.Client(base_url=s.url, headers=s.headers, timeout=900) as client:
        for k, name in enumerate(names):
            prompts = pool[k * (args.requests + 1):(k + 1) * (args.requests + 1)]
            requests = bodies(name, prompts, args)
            cold = [timed(client, path, body) for path, body in requests[:args.requests]]
            path, body = requests[-1]
            warm = [timed(client, path, body) for _ in range(args.requests + 1)][1:]  # the 1st fills the cache
            row = {"request": name, "n": len(cold), "first_s": round(cold[0], 2),
                   **{f"cold_p{q}_s": round(percentile(cold, q), 2) for q in (50, 95)},
                   **{f"warm_p{q}_s": round(percentile(warm, q), 2) for q in (50, 95)}}
            rows.append(row)
            print(f"  {name}: cold p50 {row['cold_p50_s']}s, warm p50 {row['warm_p50_s']}s", flush=True)
    print_table(rows, ["request", "n", "first_s", "cold_p50_s", "cold_p95_s", "warm_p50_s", "warm_p95_s"],
                title="latency of one request (s)")
    critique = next((r for r in rows if r["request"] == "critique:1"), rows[0])
    ratio = critique["warm_p50_s"] / critique["cold_p50_s"]
    payload = {"rows": rows, "requests": args.requests, "max_tokens": args.max_tokens, "ensemble": args.ensemble,
               "ratio_is": "critique rounds=1: warm p50 / cold p50"}
    write_results("latency", payload, ratio, out=args.out)
    return payload


if __name__ == "__main__":
    main()
