"""Records per minute of each batch stage on a running stack, side by side in one run.

    python bench/dataset_throughput.py --url http://127.0.0.1:8000 [--records 48] [--max-tokens 64]
    python bench/dataset_throughput.py --records 2000 --stages critique   # issue 13's 2k-prompt run

Uses the project's own red-team prompts (cycled, with unique ids, past their 48); each stage runs as a fresh batch
(a unique key), so nothing is served from an earlier run. A batch too large for one request body goes in parts, as
`ucai data generate` sends it (`ucai.datasets.generate.run_batches`). Prints a table and writes JSON to
bench/results/.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
import uuid
from pathlib import Path

from ucai.datasets import REDTEAM_PROMPTS
from ucai.datasets.generate import run_batches
from ucai.datasets.importers import import_file


def run_stage(url: str, stage: str, records: list[dict], params: dict) -> dict:
    started = time.perf_counter()
    body = {"stage": stage, "constitution": "ethical", "input": {"records": records}, "params": params,
            "idempotency_key": f"bench-{stage}-{uuid.uuid4()}"}
    (view, _lines), = run_batches(url, [body])
    wall = time.perf_counter() - started
    return {"stage": stage, "records": view["total"], "done": view["done"], "failed": view["failed"],
            "parts": len(view.get("ids", [view["id"]])), "wall_s": round(wall, 1),
            "records_per_min": round(view["done"] / wall * 60, 2)}


def bench_records(n: int) -> list[dict]:
    """n records of the bundled prompts, cycled; ids unique (a prompt repeated is a record of its own)."""
    prompts = import_file(REDTEAM_PROMPTS, "jsonl").records
    return [{"id": f"{prompts[i % len(prompts)].id}-{i}", "prompt": prompts[i % len(prompts)].prompt}
            for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--records", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--stages", default="categorise,critique,preference",
                        help="comma list of categorise, critique, preference")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dataset_throughput.json")
    args = parser.parse_args()

    records = bench_records(args.records)
    every = {"categorise": {}, "critique": {"max_tokens": args.max_tokens, "rounds": 1, "seed": 0},
             "preference": {"max_tokens": args.max_tokens, "ensemble": 2, "seed": 0}}
    stages = [(stage, every[stage]) for stage in args.stages.split(",")]
    rows = [run_stage(args.url, stage, records, params) for stage, params in stages]
    print(f"{'stage':<12} {'records':>7} {'failed':>6} {'parts':>5} {'wall s':>8} {'records/min':>11}")
    for r in rows:
        print(f"{r['stage']:<12} {r['records']:>7} {r['failed']:>6} {r['parts']:>5} {r['wall_s']:>8.1f} "
              f"{r['records_per_min']:>11.2f}")
    critique = next((r for r in rows if r["stage"] == "critique"), None)
    if critique and critique["records_per_min"]:
        base = critique["records_per_min"]
        print("relative to critique: " + ", ".join(f"{r['stage']} {r['records_per_min'] / base:.2f}x" for r in rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.platform(), "max_tokens": args.max_tokens, "rows": rows},
                                   indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
