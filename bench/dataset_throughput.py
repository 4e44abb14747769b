"""Records per minute of each batch stage on a running stack, side by side in one run.

    python bench/dataset_throughput.py --url http://127.0.0.1:8000 [--records 48] [--max-tokens 64]

Uses the project's own red-team prompts; each stage runs as a fresh batch (a unique key), so
nothing is served from an earlier run. Prints a table and writes JSON to bench/results/.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
import uuid
from pathlib import Path

import httpx

from ucai.datasets import REDTEAM_PROMPTS
from ucai.datasets.importers import import_file


def run_stage(client: httpx.Client, stage: str, records: list[dict], params: dict) -> dict:
    started = time.perf_counter()
    view = client.post("/batches", json={"stage": stage, "input": {"records": records}, "params": params,
                                         "idempotency_key": f"bench-{stage}-{uuid.uuid4()}"}).json()
    while view["status"] == "running":
        time.sleep(1)
        view = client.get(f"/batches/{view['id']}").json()
    wall = time.perf_counter() - started
    return {"stage": stage, "records": view["total"], "done": view["done"], "failed": view["failed"],
            "wall_s": round(wall, 1), "records_per_min": round(view["done"] / wall * 60, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--records", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dataset_throughput.json")
    args = parser.parse_args()

    prompts = import_file(REDTEAM_PROMPTS, "jsonl").records[: args.records]
    records = [{"id": r.id, "prompt": r.prompt} for r in prompts]
    stages = [("categorise", {}), ("critique", {"max_tokens": args.max_tokens, "rounds": 1, "seed": 0}),
              ("preference", {"max_tokens": args.max_tokens, "ensemble": 2, "seed": 0})]
    with httpx.Client(base_url=args.url, timeout=120) as client:
        rows = [run_stage(client, stage, records, params) for stage, params in stages]
    print(f"{'stage':<12} {'records':>7} {'failed':>6} {'wall s':>8} {'records/min':>11}")
    for r in rows:
        print(f"{r['stage']:<12} {r['records']:>7} {r['failed']:>6} {r['wall_s']:>8.1f} {r['records_per_min']:>11.2f}")
    base = rows[1]["records_per_min"] or 1
    print("relative to critique: " + ", ".join(f"{r['stage']} {r['records_per_min'] / base:.2f}x" for r in rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.platform(), "max_tokens": args.max_tokens, "rows": rows},
                                   indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
