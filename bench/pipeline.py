"""Pipeline efficiency: critique → revision through gateway → Redis → worker(s) → `vllm serve`, versus the engine
called directly doing the same generations.

    python bench/pipeline.py [--prompts 64] [--max-tokens 48] [--rounds 1] [--repeats 1] [--quick]

Both sides run the same conversations (the bundled prompts, constitution `ethical`, temperature 0, one seed per
prompt): the same three prompts per conversation (answer, critique, revision; ucai/prompts.py) with the same token
budget. The raw side calls the project's runner (`run_critique_revision`) in this process against `vllm serve`
with every conversation at once and no request limit — the engine with the best concurrency it can get, and
nothing of the service around it. vLLM's prefix cache is emptied before each side (neither reuses the other's
prompts) and its prefix-cache hit rate is read per side from its /metrics. `--repeats 2` runs raw, pipeline,
pipeline, raw (so drift on a shared machine falls on both sides alike).

ratio = pipeline conversations/s ÷ raw conversations/s (goal ≥ 0.9). Writes bench/results/pipeline.json.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    SERVED_NAME,
    add_stack_args,
    bench_prompts,
    print_table,
    reset_prefix_cache,
    stack,
    vllm_counters,
    write_results,
)


def critique_body(prompt: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    return {"prompt": prompt, "constitution": "ethical", "rounds": args.rounds, "seed": seed,
            "max_tokens": args.max_tokens, "temperature": 0.0}


async def run_pipeline(url: str, headers: dict[str, str], prompts: list[str], args: argparse.Namespace) -> dict:
    """Every conversation POSTed at once (wait=true); the wall time until the last result."""
    limits = httpx.Limits(max_connections=len(prompts) + 8, max_keepalive_connections=len(prompts) + 8)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=900, limits=limits) as client:
        async def one(i: int, prompt: str) -> dict:
            r = await client.post("/critique", json={**critique_body(prompt, i, args), "timeout_s": 600})
            r.raise_for_status()
            return r.json()

        started = time.perf_counter()
        results = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
        wall = time.perf_counter() - started
    return {"wall_s": wall, "usage": [r["usage"] for r in results], "job_s": [r["timings"]["total"] for r in results]}


async def run_raw(role_url: str, prompts: list[str], args: argparse.Namespace) -> dict:
    """The same runner, in this process, straight at the engine: all conversations at once, no request limit."""
    from services.cai.critique_revision import run_critique_revision
    from ucai.constitutions.loader import load_constitutions
    from ucai.roles import Roles
    from ucai.schemas import CritiqueJob, CritiqueRequest
    from ucai.settings import RoleSettings, Settings

    role = RoleSettings(base_url=role_url, model=SERVED_NAME, concurrency=max(1, 4 * len(prompts)))
    settings = Settings(generator=role, critic=role, judge=role, chat=role)
    constitution = load_constitutions()["ethical"]
    jobs = [CritiqueJob(job_id=f"raw-{i}", constitution=constitution,
                        request=CritiqueRequest(**critique_body(p, i, args))) for i, p in enumerate(prompts)]
    roles = Roles(settings)
    try:
        started = time.perf_counter()
        results = await asyncio.gather(*(run_critique_revision(job, roles) for job in jobs))
        wall = time.perf_counter() - started
    finally:
        await roles.aclose()
    return {"wall_s": wall, "usage": [r.usage.model_dump() for r in results],
            "job_s": [r.timings["total"] for r in results]}


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system) used so far by each process and its children, summed per name before any '-'."""
    import psutil

    used: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            root = psutil.Process(pid)
            # This process is the parent of the stack it started: its own time only.
            tree = [root] if pid == os.getpid() else [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        total = 0.0
        for p in tree:
            try:
                times = p.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                continue
        used[name.split("-")[0]] = used.get(name.split("-")[0], 0.0) + total
    return used


def summarise(side: str, runs: list[dict], conversations: int, hits: list[float | None]) -> dict:
    wall = statistics.mean(r["wall_s"] for r in runs)
    tokens = statistics.mean(sum(u["completion_tokens"] for u in r["usage"]) for r in runs)
    requests = statistics.mean(sum(u["requests"] for u in r["usage"]) for r in runs)
    hit = [h for h in hits if h is not None]
    return {"side": side, "conversations": conversations, "runs": len(runs), "wall_s": round(wall, 2),
            "conv_per_s": round(conversations / wall, 3), "out_tok_per_s": round(tokens / wall, 1),
            "output_tokens": int(tokens), "model_calls": int(requests),
            "prefix_hit_rate": round(statistics.mean(hit), 3) if hit else None,
            "mean_conversation_s": round(statistics.mean(statistics.mean(r["job_s"]) for r in runs), 1),
            "cpu_s": {k: round(statistics.mean(r["cpu_s"].get(k, 0.0) for r in runs), 1)
                      for k in runs[0].get("cpu_s", {})}}


def measure(role_url: str, url: str, headers: dict[str, str], prompts: list[str], args: argparse.Namespace,
            order: list[str], pids: dict[str, int] | None = None
            ) -> tuple[dict[str, list[dict]], dict[str, list[float | None]], bool]:
    runs: dict[str, list[dict]] = {"raw": [], "pipeline": []}
    hits: dict[str, list[float | None]] = {"raw": [], "pipeline": []}
    reset_ok = True
    for side in order:
        reset_ok &= reset_prefix_cache(role_url)
        before = vllm_counters(role_url)
        cpu_before = cpu_seconds({"bench": os.getpid(), **(pids or {})})
        if side == "raw":
            run = asyncio.run(run_raw(role_url, prompts, args))
        else:
            run = asyncio.run(run_pipeline(url, headers, prompts, args))
        after = vllm_counters(role_url)
        cpu_after = cpu_seconds({"bench": os.getpid(), **(pids or {})})
        run["cpu_s"] = {k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after}
        queries = after.get("vllm:prefix_cache_queries", 0) - before.get("vllm:prefix_cache_queries", 0)
        hit = (after.get("vllm:prefix_cache_hits", 0) - before.get("vllm:prefix_cache_hits", 0)) / queries \
            if queries else None
        runs[side].append(run)
        hits[side].append(hit)
        print(f"  {side:<8} {run['wall_s']:7.1f}s  prefix-cache hit rate {hit if hit is None else round(hit, 3)}",
              flush=True)
    return runs, hits, reset_ok


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stack_args(parser)
    parser.add_argument("--prompts", type=int, default=64, help="conversations per side (the issue: >= 64)")
    parser.add_argument("--max-tokens", type=int, default=48, help="token budget of every model call")
    parser.add_argument("--rounds", type=int, default=1, help="critique → revision rounds per conversation")
    parser.add_argument("--repeats", type=int, default=1, help="1: raw then pipeline; 2: raw, pipeline, pipeline, raw")
    parser.add_argument("--vllm-arg", action="append", default=[],
                        help="extra `vllm serve` flag for a stack started here (e.g. --vllm-arg=--no-enable-prefix-"
                        "caching)")
    parser.add_argument("--label", default=None, help="stored with the results (e.g. 'before')")
    parser.add_argument("--out", default=None, help="results file (default bench/results/pipeline.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.max_tokens = min(args.prompts, 8), min(args.max_tokens, 16)
    prompts = bench_prompts(args.prompts)
    order = ["raw", "pipeline"] if args.repeats < 2 else ["raw", "pipeline", "pipeline", "raw"]
    with stack(args, vllm_args=args.vllm_arg) as s:
        # Warm-up: both paths once (lazy imports, the engine's first batch, the constitution in Redis).
        asyncio.run(run_raw(s.role_url, prompts[:2], args))
        asyncio.run(run_pipeline(s.url, s.headers, prompts[:2], args))
        from ucai.settings import get_settings

        settings = get_settings()
        runs, hits, reset_ok = measure(s.role_url, s.url, s.headers, prompts, args, order, s.pids())
    rows = [summarise(side, runs[side], len(prompts), hits[side]) for side in ("raw", "pipeline")]
    raw, pipe = rows
    ratio = pipe["conv_per_s"] / raw["conv_per_s"]
    token_ratio = pipe["out_tok_per_s"] / raw["out_tok_per_s"]
    print_table(rows, ["side", "conversations", "wall_s", "conv_per_s", "out_tok_per_s", "output_tokens",
                       "model_calls", "prefix_hit_rate"], title=f"pipeline vs raw engine ({args.label or 'current'})")
    for row in rows:
        print(f"  {row['side']}: CPU seconds used meanwhile {row['cpu_s']}; mean conversation "
              f"{row['mean_conversation_s']}s")
    print(f"pipeline / raw: {ratio:.3f} conversations/s, {token_ratio:.3f} output tokens/s (goal >= 0.9)")
    payload = {"label": args.label, "prompts": len(prompts), "max_tokens": args.max_tokens, "rounds": args.rounds,
               "order": order, "rows": rows, "token_ratio": round(token_ratio, 3),
               "prefix_cache_reset_between_sides": reset_ok, "vllm_args": args.vllm_arg,
               "worker_concurrency": int(_env("UCAI_WORKER_CONCURRENCY", settings.worker_concurrency)),
               "role_concurrency": int(_env("UCAI_GENERATOR__CONCURRENCY", settings.generator.concurrency)),
               "workers": args.workers}
    write_results("pipeline", payload, ratio, out=None if args.out is None else Path(args.out))
    return {"ratio": ratio, **payload}


def _env(name: str, default: Any) -> Any:
    return os.environ.get(name, default)


if __name__ == "__main__":
    main()
