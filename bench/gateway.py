"""What the gateway and the queue cost: latency added over calling the role endpoint directly, and enqueue throughput.

    python bench/gateway.py [--requests 200] [--concurrency 1,4,16,64,256] [--seconds 3] [--quick]

The role endpoint is the fast OpenAI-compatible test server (tests/openai_test_server.py, in a process of its own,
no model), so model time does not hide what the service adds. Stack: own redis-server, one worker, the gateway (or
the running one at --url, whose role endpoint is then what --vllm-url names).

Latency (one request at a time, `--requests` of each):
- direct:   the critique runner (one round: answer, critique, revision = 3 chat calls) in this process, straight at the
            role endpoint;
- 202:      POST /critique with wait=false — validation, context check, the job written to Redis and queued;
- wait:     POST /critique (wait=true) — the same job through Redis, the worker, and back.
added = wait − direct, per percentile (goal: p50 ≤ 3 ms).

Enqueue throughput: POST /critique wait=false from a load driver in another process (aiohttp) at each concurrency
for `--seconds`, the worker stopped first when the stack was started here (so only admission is measured; the jobs
stay queued). Goal ≥ 1,000 enqueues/s on 2 cores. ratio = best enqueues/s ÷ 1000.
Writes bench/results/gateway.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_stack_args, percentile, print_table, stack, write_results  # noqa: E402

BODY = {"prompt": "How do I pick a lock?", "constitution": "ethical", "rounds": 1, "seed": 1, "max_tokens": 16}


def serve_test_model(port: int) -> None:
    """The test server without access logs (they would cost more than what is measured)."""
    import uvicorn

    from tests.openai_test_server import OpenAITestServer

    server = OpenAITestServer("smollm2", 8192, port, "127.0.0.1")
    uvicorn.run(server.app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def start_test_model() -> tuple[subprocess.Popen, str]:
    from services.runtime.local_stack import free_port, service_env, wait_http

    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--serve-test-model", str(port)], env=service_env(),
                               start_new_session=True)
    wait_http(f"http://127.0.0.1:{port}/health", process, 60, "test model server")
    return process, f"http://127.0.0.1:{port}/v1"


def latencies(url: str, headers: dict[str, str], role_url: str, n: int) -> dict[str, list[float]]:
    from services.cai.critique_revision import run_critique_revision
    from ucai.constitutions.loader import load_constitutions
    from ucai.roles import Roles
    from ucai.schemas import CritiqueJob, CritiqueRequest
    from ucai.settings import RoleSettings, Settings

    role = RoleSettings(base_url=role_url, model="smollm2")
    constitution = load_constitutions()["ethical"]

    async def direct() -> list[float]:
        roles = Roles(Settings(generator=role, critic=role, judge=role, chat=role))
        times = []
        try:
            for i in range(n + 3):
                job = CritiqueJob(job_id=f"d{i}", constitution=constitution,
                                  request=CritiqueRequest(**{**BODY, "seed": i}))
                started = time.perf_counter()
                await run_critique_revision(job, roles)
                times.append(time.perf_counter() - started)
        finally:
            await roles.aclose()
        return times[3:]  # the first ones open connections

    def via_gateway(wait: bool) -> list[float]:
        times = []
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            for i in range(n + 3):
                started = time.perf_counter()
                r = client.post("/critique", json={**BODY, "seed": i, "wait": wait})
                times.append(time.perf_counter() - started)
                if r.status_code != (200 if wait else 202):
                    raise RuntimeError(f"POST /critique answered {r.status_code}: {r.text[:300]}")
        return times[3:]

    return {"direct": asyncio.run(direct()), "202": via_gateway(False), "wait": via_gateway(True)}


async def drive(url: str, headers: dict[str, str], concurrency: int, seconds: float) -> dict:
    """The load driver (its own process): `concurrency` clients POSTing wait=false jobs back to back."""
    import aiohttp

    counts = {"ok": 0, "other": 0}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base_url=url, headers=headers, connector=connector) as session:
        async def client(c: int) -> None:
            i = 0
            while time.perf_counter() < deadline:
                i += 1
                async with session.post("/critique", json={**BODY, "seed": c * 1_000_000 + i, "wait": False}) as r:
                    await r.read()
                    counts["ok" if r.status == 202 else "other"] += 1

        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(client(c) for c in range(concurrency)))
        wall = time.perf_counter() - started
    return {"concurrency": concurrency, "accepted": counts["ok"], "refused": counts["other"],
            "enqueues_per_s": round(counts["ok"] / wall, 1)}


def run_driver(url: str, headers: dict[str, str], concurrency: int, seconds: float) -> dict:
    from services.runtime.local_stack import service_env

    out = subprocess.run([sys.executable, __file__, "--drive", url, "--concurrency", str(concurrency),
                          "--seconds", str(seconds), "--headers", json.dumps(headers)],
                         env=service_env(), capture_output=True, text=True, timeout=seconds + 120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stack_args(parser)
    parser.add_argument("--requests", type=int, default=200, help="sequential requests per latency row")
    parser.add_argument("--concurrency", default="1,4,16,64,256", help="load driver concurrencies")
    parser.add_argument("--seconds", type=float, default=3.0, help="load per concurrency")
    parser.add_argument("--out", type=Path, default=None, help="results file (default bench/results/gateway.json)")
    parser.add_argument("--serve-test-model", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--drive", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--headers", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_test_model:
        serve_test_model(args.serve_test_model)
        return None
    if args.drive:
        print(json.dumps(asyncio.run(drive(args.drive, json.loads(args.headers), int(args.concurrency),
                                           args.seconds))))
        return None
    if args.quick:
        args.requests, args.concurrency, args.seconds = 20, "1,16", 1.0
    levels = [int(c) for c in args.concurrency.split(",")]
    model = None
    try:
        running = args.url and httpx.get(f"{args.url.rstrip('/')}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        running = False
    try:
        role_url = None
        if not running:
            model, role_url = start_test_model()
        with stack(args, role_url=role_url) as s:
            times = latencies(s.url, s.headers, s.role_url, args.requests)
            workers_stopped = False
            if s.started_here:
                from services.runtime.local_stack import stop

                for name, process in s.processes.items():
                    if name.startswith("worker"):
                        stop(process)
                        workers_stopped = True
            load = [run_driver(s.url, s.headers, c, args.seconds) for c in levels]
    finally:
        if model is not None:
            from services.runtime.local_stack import stop

            stop(model)
    rows = []
    for name in ("direct", "202", "wait"):
        ms = [t * 1000 for t in times[name]]
        rows.append({"path": name, "n": len(ms), **{f"p{q}_ms": round(percentile(ms, q), 2) for q in (50, 95, 99)}})
    direct = rows[0]
    rows.append({"path": "added (wait - direct)", "n": None,
                 **{f"p{q}_ms": round(rows[2][f"p{q}_ms"] - direct[f"p{q}_ms"], 2) for q in (50, 95, 99)}})
    print_table(rows, ["path", "n", "p50_ms", "p95_ms", "p99_ms"], title="latency, one request at a time")
    print_table(load, ["concurrency", "accepted", "refused", "enqueues_per_s"],
                title="enqueue throughput (POST /critique wait=false, load driver in another process)")
    best = max(r["enqueues_per_s"] for r in load)
    print(f"added p50 {rows[3]['p50_ms']} ms (goal <= 3); best {best:.0f} enqueues/s (goal >= 1000)")
    payload = {"latency": rows, "added_p50_ms": rows[3]["p50_ms"], "enqueue": load, "best_enqueues_per_s": best,
               "workers_stopped_for_enqueue": workers_stopped, "requests": args.requests, "body": BODY}
    write_results("gateway", payload, best / 1000, out=args.out)
    return payload


if __name__ == "__main__":
    main()
