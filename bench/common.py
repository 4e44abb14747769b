"""What the issue-14 benchmarks share: the machine, tables, results JSON (with a top-level `ratio`), the bench
prompts, and a stack to measure — the one already answering at --url, else local_stack's pieces started here on
free ports (own redis-server, `vllm serve` or another role endpoint, worker(s), gateway) and stopped afterwards.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/x.py` from anywhere
    sys.path.insert(0, str(ROOT))

RESULTS = Path(__file__).parent / "results"
LOGS = ROOT / ".ucai" / "logs" / "bench"
SERVED_NAME = "smollm2"
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def machine() -> dict[str, Any]:
    """What the figures were measured on (they mean little without it)."""
    from ucai.engine_dtype import cpu_flags

    model = ""
    with contextlib.suppress(OSError):
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    memory_gib = None
    with contextlib.suppress(OSError, ValueError, StopIteration):
        kb = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        memory_gib = round(int(kb.split()[1]) / 2**20, 1)
    flags = cpu_flags()
    gpu = None
    with contextlib.suppress(Exception):
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": model or platform.processor(), "cores": os.cpu_count(), "memory_gib": memory_gib,
            "flags": [f for f in CPU_FLAGS if f in flags], "gpu": gpu, "platform": platform.platform(),
            "python": platform.python_version(), "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return "" if value is None else str(value)


def print_table(rows: list[dict[str, Any]], columns: list[str], title: str | None = None) -> str:
    """A plain-text table of `columns` of `rows` (printed, and returned for the README)."""
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = [title] if title else []
    lines.append("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True)))
              for row in cells]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def write_results(name: str, payload: dict[str, Any], ratio: float | None, out: Path | None = None) -> Path:
    """bench/results/<name>.json: the benchmark's figures, a top-level `ratio` (None for one-sided ones) and the
    machine."""
    out = out or RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {"benchmark": name, "ratio": None if ratio is None else round(ratio, 3), **payload,
                "machine": machine()}
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"ratio {document['ratio']}  (wrote {out})", flush=True)
    return out


def bench_prompts(n: int) -> list[str]:
    """n prompts: the bundled red-team prompts, then the helpful ones, cycled when more are asked for."""
    from ucai.datasets import REDTEAM_PROMPTS

    helpful = ROOT / "ucai" / "evaluation" / "data" / "helpful_prompts.jsonl"
    pool = [json.loads(line)["prompt"] for path in (REDTEAM_PROMPTS, helpful)
            for line in path.read_text().splitlines() if line.strip()]
    return [pool[i % len(pool)] for i in range(n)]


def stage_list(parser: argparse.ArgumentParser, text: str, choices: Sequence[str]) -> list[str]:
    """A comma list of training stages from the command line, each one of `choices` (else the parser's error)."""
    stages = text.split(",")
    if unknown := set(stages) - set(choices):
        parser.error(f"unknown stage(s) {', '.join(sorted(unknown))}; choose from {', '.join(choices)}")
    return stages


def add_stack_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8000",
                        help="gateway of a running stack; when its /health does not answer, one is started here")
    parser.add_argument("--vllm-url", default=None, help="the running stack's role endpoint (default: "
                        "UCAI_GENERATOR__BASE_URL); ignored when the stack is started here")
    parser.add_argument("--api-key", default=os.environ.get("UCAI_API_KEY"),
                        help="key for a running stack (default: $UCAI_API_KEY, else .ucai/dev-api-key)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes of a stack started here")
    parser.add_argument("--logs", type=Path, default=LOGS, help="process logs of a stack started here")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few requests, small budgets")


@dataclass
class Stack:
    """The stack a benchmark measures: the gateway, the role endpoint behind it, and the processes started here."""

    url: str
    role_url: str
    headers: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    started_here: bool = False

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.processes.items()}


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _existing_key(api_key: str | None) -> dict[str, str]:
    key = api_key
    if key is None and (ROOT / ".ucai" / "dev-api-key").exists():
        key = (ROOT / ".ucai" / "dev-api-key").read_text().strip()
    return {"Authorization": f"Bearer {key}"} if key else {}


def stack_env(redis_url: str, role_url: str, **extra: str) -> dict[str, str]:
    """Worker and gateway environment as `ucai up` makes it, but every role on role_url, auth off, no worker metrics
    port clash."""
    from services.runtime.local_stack import LOCAL_WORKER_CONCURRENCY, service_env
    from ucai.settings import ROLE_NAMES

    env = service_env(REDIS_URL=redis_url, UCAI_WORKER_METRICS_PORT="0",
                      UCAI_AUDIT_LOG=str(Path(tempfile.gettempdir()) / "ucai-bench-audit.jsonl"))
    for name in ("UCAI_REDIS_URL", "UCAI_API_KEYS_FILE", "UCAI_API_KEYS"):
        env.pop(name, None)
    for role in ROLE_NAMES:
        env[f"UCAI_{role.upper()}__BASE_URL"] = role_url
        env[f"UCAI_{role.upper()}__MODEL"] = SERVED_NAME
    env.setdefault("UCAI_WORKER_CONCURRENCY", str(LOCAL_WORKER_CONCURRENCY))  # as `ucai up` starts its worker
    env.update(extra)
    return env


@contextlib.contextmanager
def stack(args: argparse.Namespace, *, role_url: str | None = None, vllm_args: Sequence[str] = (),
          worker_env: dict[str, str] | None = None, max_model_len: int = 4096, model: str | None = None,
          dtype: str | None = None, enforce_eager: bool | None = None) -> Iterator[Stack]:
    """The gateway at args.url when its /health answers; else redis + `vllm serve` (or role_url, e.g. the fast test
    server) + args.workers worker(s) + gateway started here, on free ports, and stopped on exit. vLLM is started with
    VLLM_SERVER_DEV_MODE=1 so a benchmark can reset its prefix cache between the two sides of a comparison; `model`,
    `dtype` and `enforce_eager` default to the bundled model and the settings (the GPU script passes its own)."""
    if args.url and _answers(f"{args.url.rstrip('/')}/health"):
        from ucai.settings import get_settings

        base = args.vllm_url or role_url or get_settings().generator.base_url
        print(f"using the running stack at {args.url} (role endpoint {base})", flush=True)
        yield Stack(args.url.rstrip("/"), base.rstrip("/"), _existing_key(args.api_key))
        return
    from services.runtime.local_stack import free_port, start_gateway, start_vllm, start_worker, stop, wait_http
    from ucai.engine_dtype import EngineDtype
    from ucai.local_redis import start_redis
    from ucai.model_prepare import resolve_model_path

    logs: Path = args.logs
    logs.mkdir(parents=True, exist_ok=True)
    processes: dict[str, subprocess.Popen] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ucai-bench-redis-") as redis_dir:
        try:
            redis_port = free_port()
            processes["redis"] = start_redis(Path(redis_dir), redis_port)
            if role_url is None:
                port = free_port()
                processes["vllm"] = start_vllm(model or resolve_model_path(), port, SERVED_NAME, max_model_len,
                                               logs / "vllm.log", extra_args=list(vllm_args),
                                               dtype=EngineDtype(dtype, "benchmark") if dtype else None,
                                               enforce_eager=enforce_eager, env={"VLLM_SERVER_DEV_MODE": "1"})
                role_url = f"http://127.0.0.1:{port}/v1"
                wait_http(f"{role_url}/models", processes["vllm"], 900, "vllm serve")
            env = stack_env(f"redis://127.0.0.1:{redis_port}/0", role_url, **(worker_env or {}))
            for i in range(args.workers):
                processes[f"worker-{i}"] = start_worker(env, logs / f"worker-{i}.log")
            gateway_port = free_port()
            processes["gateway"] = start_gateway(env, gateway_port, logs / "gateway.log")
            url = f"http://127.0.0.1:{gateway_port}"
            wait_http(f"{url}/ready", processes["gateway"], 120, "gateway")
            print(f"started a stack in {time.monotonic() - started:.0f}s: gateway {url}, role endpoint {role_url}, "
                  f"logs {logs}", flush=True)
            yield Stack(url, role_url.rstrip("/"), {}, processes, True)
        finally:
            for process in reversed(processes.values()):
                stop(process)


def reset_prefix_cache(role_url: str) -> bool:
    """Empty vLLM's prefix cache (dev-mode route), so neither side of a comparison reuses the other's prompts."""
    root = role_url.removesuffix("/v1")
    try:
        return httpx.post(f"{root}/reset_prefix_cache", timeout=30).status_code == 200
    except httpx.HTTPError:
        return False


def vllm_counters(role_url: str, names: Sequence[str] = ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits",
                                                        "vllm:generation_tokens", "vllm:prompt_tokens")
                  ) -> dict[str, float]:
    """Totals of some counters from vLLM's Prometheus /metrics (summed over labels); {} when there is none."""
    root = role_url.removesuffix("/v1")
    try:
        text = httpx.get(f"{root}/metrics", timeout=10).text
    except httpx.HTTPError:
        return {}
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        metric, _, value = line.rpartition(" ")
        base = metric.split("{", 1)[0].removesuffix("_total")
        if base in names:
            with contextlib.suppress(ValueError):
                totals[base] = totals.get(base, 0.0) + float(value)
    return totals


# name → (what its ratio is, the goal) for the summary `make bench` ends with.
GOALS = {
    "gateway": ("best enqueues/s ÷ 1000", "≥ 1 (and added p50 ≤ 3 ms)"),
    "latency": ("critique rounds=1: warm p50 ÷ cold p50", "— (one-sided)"),
    "pipeline": ("pipeline ÷ raw engine, conversations/s", "≥ 0.9"),
    "naive": ("pipeline ÷ naive generate loop, conversations/s", "≥ 10"),
    "memory": ("peak RSS of the whole stack ÷ 4 GiB", "≤ 1"),
    "training": ("project SFT ÷ plain TRL, s/step (grpo_ratio: GRPO)", "≤ 1.05"),
}


def summary(names: Sequence[str] = tuple(GOALS)) -> str:
    """A markdown table of the latest results of each benchmark (bench/results/<name>.json)."""
    lines = ["| benchmark | ratio | ratio is | goal | measured |", "|---|---|---|---|---|"]
    for name in names:
        path = RESULTS / f"{name}.json"
        what, goal = GOALS.get(name, ("", ""))
        if not path.exists():
            lines.append(f"| {name} | — | {what} | {goal} | not run |")
            continue
        data = json.loads(path.read_text())
        ratio = data.get("ratio")
        extra = f" (grpo {data['grpo_ratio']})" if data.get("grpo_ratio") is not None else ""
        lines.append(f"| {name} | {ratio}{extra} | {what} | {goal} | {data.get('machine', {}).get('date', '')} |")
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    summary(sys.argv[1:] or tuple(GOALS))
