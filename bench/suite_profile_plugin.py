"""pytest plugin of bench/suite_profile.py: around every test, the machine's busy and idle CPU time (/proc/stat),
the CPU time of each kind of process (psutil), and the tokens of every local vLLM engine (its /metrics).

Processes that end during a test are seen through pytest's own `children` times once they are reaped (training runs,
CLIs, stopped services), as one "children (exited)" figure, not by kind. Writes one JSON row per test to
$UCAI_SUITE_PROFILE_OUT at the end of the session.
"""
from __future__ import annotations

import json
import os
import re
import time
import urllib.request

import psutil
import pytest

ENGINE_COUNTERS = ("prompt_tokens_total", "generation_tokens_total", "prefix_cache_hits_total",
                   "request_success_total")
# The first match names the process: the order matters (a worker's command line can name vLLM's URL).
KINDS = (("vllm", ("vllm_launcher", "VLLM::", "vllm serve")), ("worker", ("services.runtime.worker",)),
         ("gateway", ("gateway.app",)), ("training", ("-m training",)), ("cli", ("ucai.cli", "bin/ucai")),
         ("browser", ("chrom",)), ("redis", ("redis-server",)))

_rows: list[dict] = []


def _kind(args: str, name: str) -> str:
    text = f"{name} {args}"
    return next((kind for kind, marks in KINDS if any(m in text for m in marks)), "other")


def _processes() -> tuple[dict[tuple[int, str], float], set[str], set[int]]:
    """One pass over the processes: CPU seconds by (pid, kind), the ports of the local vLLM engines, and the pids
    of this process's descendants (only those can reach its children times)."""
    me, cpu, ports = os.getpid(), {}, set()
    descendants = {child.pid for child in psutil.Process(me).children(recursive=True)}
    for process in psutil.process_iter(["cmdline", "name", "cpu_times"]):
        times, args = process.info["cpu_times"], process.info["cmdline"] or []
        if times is None:
            continue
        if process.pid == me:
            cpu[(me, "pytest")] = times.user + times.system
            cpu[(me, "children (exited)")] = times.children_user + times.children_system
            continue
        cpu[(process.pid, _kind(" ".join(args), process.info["name"] or ""))] = times.user + times.system
        if any("vllm_launcher" in a for a in args) and "--port" in args:
            ports.add(args[args.index("--port") + 1])
    return cpu, ports, descendants


def _engine_counters(port: str) -> dict[str, float] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=15) as response:
            text = response.read().decode()
    except OSError:
        return None
    return {name: sum(float(m.group(1)) for m in re.finditer(rf"^vllm:{name}\{{[^}}]*\}} (\S+)$", text, re.M))
            for name in ENGINE_COUNTERS}


def _machine_ticks() -> tuple[float, float]:
    with open("/proc/stat") as stat:
        cpu = [int(x) for x in stat.readline().split()[1:]]
    idle = cpu[3] + cpu[4]
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(cpu[:8]) - idle) / hz, idle / hz


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    start, (busy0, idle0), (cpu0, ports0, mine) = time.monotonic(), _machine_ticks(), _processes()
    engines0 = {port: _engine_counters(port) for port in ports0}
    yield
    wall, (busy1, idle1), (cpu1, ports1, _) = time.monotonic() - start, _machine_ticks(), _processes()
    cpu: dict[str, float] = {}
    for (pid, kind), seconds in cpu1.items():  # a process alive at the end; one that died is not counted here
        cpu[kind] = cpu.get(kind, 0.0) + seconds - cpu0.get((pid, kind), 0.0)
    # A process that ended during the test reaches pytest's children times with its whole life's CPU (the session
    # engine's, when the last test tears the session down): only what it used during this test is this test's. Only
    # this pytest's own descendants: another process that ended (another pytest's, in `make test`'s two streams)
    # never reaches these children times, and subtracting it hid a whole subprocess's CPU.
    alive = {pid for pid, _ in cpu1}
    used_before = sum(seconds for (pid, _), seconds in cpu0.items() if pid in mine and pid not in alive)
    cpu["children (exited)"] = max(0.0, cpu.get("children (exited)", 0.0) - used_before)
    tokens: dict[str, float] = {}
    for port in ports1:
        before = engines0.get(port) or {}  # an engine that started during the test counts from zero
        for name, value in (_engine_counters(port) or {}).items():
            tokens[name] = tokens.get(name, 0.0) + value - before.get(name, 0.0)
    _rows.append({"test": item.nodeid, "wall_s": round(wall, 3), "busy_cpu_s": round(busy1 - busy0, 2),
                  "idle_cpu_s": round(idle1 - idle0, 2), "cpu_s": {k: round(v, 2) for k, v in cpu.items() if v},
                  "engine": {k: int(v) for k, v in tokens.items()}})


def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get("UCAI_SUITE_PROFILE_OUT")
    if out:
        with open(out, "w") as f:
            json.dump(_rows, f)
