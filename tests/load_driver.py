"""An async httpx load driver for the load tests: closed-loop clients, each sending its next request as soon as the
last one answered, for a fixed time; then the exactly-once check of every accepted job in Redis."""
from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"


@dataclass
class LoadRun:
    clients: int
    duration_s: float
    completed: list[str] = field(default_factory=list)  # job ids answered 200 (the result)
    queued: list[str] = field(default_factory=list)  # job ids answered 202 (accepted, still running at the timeout)
    errors: list[str] = field(default_factory=list)  # anything else: a status other than 200/202, or no answer
    latencies_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def accepted(self) -> list[str]:
        return self.completed + self.queued

    def figures(self) -> dict:
        lat = sorted(self.latencies_s) or [0.0]

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 3)

        return {"clients": self.clients, "duration_s": self.duration_s, "wall_s": round(self.wall_s, 1),
                "requests": len(self.latencies_s) + len(self.errors), "jobs": len(self.accepted),
                "jobs_per_s": round(len(self.accepted) / self.wall_s, 1) if self.wall_s else None,
                "errors": len(self.errors), "error_examples": self.errors[:5],
                "latency_s": {"mean": round(statistics.fmean(lat), 3), "p50": pct(0.5), "p95": pct(0.95),
                              "p99": pct(0.99), "max": round(lat[-1], 3)},
                "cpus": os.cpu_count()}


async def drive(url: str, path: str, body: Callable[[int, int], dict], clients: int, duration_s: float,
                timeout_s: float = 300) -> LoadRun:
    """`clients` clients POST `body(client, n)` to `path` until `duration_s` has passed (requests already sent are
    answered); each 200 / 202 answer's `id` is an accepted job."""
    run = LoadRun(clients, duration_s)
    # A connection per request, as from separate clients. (Reused keep-alive connections race uvicorn's 5 s idle
    # close when a starved client sends its next request just as the server closes: a ReadError with the request
    # never read — the client's doing, not the gateway's.)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as http:
        started = time.monotonic()
        end = started + duration_s

        async def client(i: int) -> None:
            n = 0
            while time.monotonic() < end:
                payload, n, sent = body(i, n), n + 1, time.monotonic()
                try:
                    response = await http.post(path, json=payload)
                except httpx.HTTPError as exc:
                    run.errors.append(f"client {i}: {exc!r}")
                    continue
                run.latencies_s.append(time.monotonic() - sent)
                if response.status_code == 200:
                    run.completed.append(response.json()["id"])
                elif response.status_code == 202:
                    run.queued.append(response.json()["id"])
                else:
                    run.errors.append(f"{response.status_code}: {response.text[:200]}")

        await asyncio.gather(*(client(i) for i in range(clients)))
        run.wall_s = time.monotonic() - started
    return run


def job_records(client: redis.Redis, ids: list[str]) -> dict[str, dict[str, str]]:
    """status, completions and attempts of each job's hash `ucai:job:{id}`, read in pipelined chunks."""
    records: dict[str, dict[str, str]] = {}
    fields = ("status", "completions", "attempts")
    for start in range(0, len(ids), 1000):
        chunk = ids[start:start + 1000]
        pipe = client.pipeline(transaction=False)
        for job_id in chunk:
            pipe.hmget(f"ucai:job:{job_id}", fields)
        for job_id, values in zip(chunk, pipe.execute(), strict=True):
            records[job_id] = {f: (v.decode() if v is not None else None) for f, v in zip(fields, values, strict=True)}
    return records


def wait_all_completed(client: redis.Redis, ids: list[str], timeout_s: float) -> dict[str, dict[str, str]]:
    """The records of every job once none is left unfinished (or the timeout passed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = job_records(client, ids)
        if all(r["status"] in ("completed", "failed") for r in records.values()) or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def exactly_once_problems(records: dict[str, dict[str, str]]) -> Counter:
    """What is wrong with the jobs' records, counted: each must be completed, written once, run once."""
    problems: Counter = Counter()
    for record in records.values():
        if record["status"] != "completed":
            problems[f"status {record['status']}"] += 1
        if record["completions"] != "1":
            problems[f"completions {record['completions']}"] += 1
        if record["attempts"] != "1":
            problems[f"attempts {record['attempts']}"] += 1
    return problems


def write_figures(name: str, figures: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n")
    return path
