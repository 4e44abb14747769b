"""Redis memory per queued record: an own redis-server and a gateway with no worker (nothing consumes the queue),
one batch of N records (the project's red-team prompts, cycled, unique ids), INFO used_memory before and after.

    python bench/redis_memory.py [--records 4000] [--label after]

Prints a table and merges `{label: figures}` into bench/results/redis_memory.json. For the figure of another version
of the code, run this same script with that checkout first on PYTHONPATH, from that checkout (its gateway is
started from the working directory), e.g. the code before issue 13:

    git worktree add /tmp/h2-before <commit>
    cd /tmp/h2-before && PYTHONPATH=/tmp/h2-before python /path/to/bench/redis_memory.py --label before \\
        --out /path/to/bench/results/redis_memory.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import httpx
import redis

from services.runtime.local_stack import free_port, service_env, start_gateway, stop, wait_http
from ucai.local_redis import start_redis

PROMPTS = Path(__file__).resolve().parent.parent / "ucai" / "datasets" / "redteam_prompts.jsonl"


def records(n: int) -> list[dict]:
    prompts = [json.loads(line)["prompt"] for line in PROMPTS.read_text().splitlines() if line.strip()]
    return [{"id": f"m{i:06d}", "prompt": prompts[i % len(prompts)]} for i in range(n)]


def measure(n: int, stage: str, workdir: Path) -> dict:
    redis_port, gateway_port = free_port(), free_port()
    redis_process = start_redis(workdir / "redis", redis_port)
    url = f"redis://127.0.0.1:{redis_port}/0"
    env = service_env(REDIS_URL=url, UCAI_QUEUE_NAME="ucai:bench:memory", UCAI_AUDIT_LOG=str(workdir / "audit.jsonl"))
    for name in ("UCAI_REDIS_URL", "UCAI_API_KEYS", "UCAI_API_KEYS_FILE"):  # this Redis; no keys: auth off
        env.pop(name, None)
    gateway = start_gateway(env, gateway_port, workdir / "gateway.log")
    client = redis.Redis.from_url(url)
    try:
        base = f"http://127.0.0.1:{gateway_port}"
        wait_http(f"{base}/health", gateway, 120, "gateway")
        items = records(n)
        with httpx.Client(base_url=base, timeout=600) as api:
            api.post("/batches", json={"stage": stage, "input": {"records": items[:1]}})  # warm: scripts, secret
            before = client.info("memory")["used_memory"]
            started = time.perf_counter()
            response = api.post("/batches", json={"stage": stage, "input": {"records": items}})
            created_s = time.perf_counter() - started
            response.raise_for_status()
        delta = client.info("memory")["used_memory"] - before
        queue = env["UCAI_QUEUE_NAME"]
        entry = client.xrange(queue, count=1)[0][1][b"data"]
        return {"stage": stage, "records": n, "used_memory_delta": delta, "bytes_per_record": round(delta / n),
                "stream_entry_bytes": len(entry), "create_s": round(created_s, 2),
                "prompt_chars_mean": round(sum(len(r["prompt"]) for r in items) / n, 1)}
    finally:
        client.close()
        stop(gateway)
        stop(redis_process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=4000, help="records of the batch (the body stays < 1 MB)")
    parser.add_argument("--stage", default="categorise")
    parser.add_argument("--label", default="after", help="what code this is, e.g. before / after")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "redis_memory.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ucai-redis-memory-") as tmp:
        row = measure(args.records, args.stage, Path(tmp))
    row.update({"label": args.label, "machine": platform.platform(), "cpus": os.cpu_count()})
    print(f"{'label':<8} {'stage':<11} {'records':>7} {'MiB':>7} {'B/record':>9} {'entry B':>8} {'create s':>8}")
    print(f"{row['label']:<8} {row['stage']:<11} {row['records']:>7} {row['used_memory_delta'] / 2**20:>7.1f} "
          f"{row['bytes_per_record']:>9} {row['stream_entry_bytes']:>8} {row['create_s']:>8.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results[args.label] = row
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
