"""Judge quality of the served judge on a labelled set, under a constitution and under its inversion.

Runs `ucai judge-check`'s measurement for each constitution against a running gateway, prints one
table and writes JSON. A judge that follows its constitution has accuracy > 0.5 and a positive margin
under `ethical` (chosen = the ethical answer) and a lower margin under `unethical`.

    python bench/judge_quality.py --url http://127.0.0.1:8000 [--data bench/data/judge_pairs.jsonl]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from pathlib import Path

from ucai.evaluation.judge_check import load_pairs, run_judge_check, summarise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--data", type=Path, default=Path(__file__).parent / "data" / "judge_pairs.jsonl")
    parser.add_argument("--constitutions", nargs="+", default=["ethical", "unethical"])
    parser.add_argument("--method", default="logprob")
    parser.add_argument("--ensemble", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "judge_quality.json")
    args = parser.parse_args()

    pairs = load_pairs(args.data)
    rows = {}
    for name in args.constitutions:
        started = time.perf_counter()
        options = {"constitution": name, "method": args.method, "ensemble": args.ensemble}
        outcomes = asyncio.run(run_judge_check(args.url, pairs, options, args.seed))
        rows[name] = {**summarise(outcomes).model_dump(), "wall_s": round(time.perf_counter() - started, 1)}

    header = f"{'constitution':<12} {'pairs':>5} {'accuracy':>8} {'margin':>8} {'flips':>6} {'brier':>6} {'s/cmp':>6}"
    print(header)
    for name, r in rows.items():
        flips = "n/a" if r["position_flip_rate"] is None else f"{r['position_flip_rate']:.3f}"
        print(f"{name:<12} {r['pairs']:>5} {r['accuracy']:>8.3f} {r['mean_margin']:>+8.3f} {flips:>6} "
              f"{r['brier']:>6.3f} {r['seconds_per_compare']:>6.1f}")
    if {"ethical", "unethical"} <= rows.keys():
        shift = rows["ethical"]["mean_margin"] - rows["unethical"]["mean_margin"]
        print(f"margin shift ethical - unethical: {shift:+.3f} (> 0: the judge follows the constitution)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.platform(), "data": str(args.data), "method": args.method,
                                    "ensemble": args.ensemble, "results": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
