"""The vLLM-CPU launcher's fixes, against the real `vllm serve` the suite starts with services.runtime.vllm_launcher."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from services.runtime import vllm_launcher
from services.runtime.vllm_launcher import bound_cpus, with_worker_in_engine
from tests.conftest import SERVED_NAME, launcher_processes
from ucai.settings import get_settings

pytestmark = pytest.mark.slow


async def _seeded_requests(url: str, n: int) -> list[int]:
    async def one(client: httpx.AsyncClient, i: int) -> int:
        # Long, different prompts sent at once: the scheduler prefills some of them in chunks.
        text = " ".join(f"word{j}" for j in range(300 + 20 * i))
        r = await client.post(f"{url}/chat/completions", json={
            "model": SERVED_NAME, "messages": [{"role": "user", "content": text}],
            "max_tokens": 4, "temperature": 1.0, "seed": i})
        return r.status_code

    async with httpx.AsyncClient(timeout=600) as client:
        return list(await asyncio.gather(*[one(client, i) for i in range(n)]))


def test_seeded_sampling_survives_chunked_prefill(vllm_url):
    """vLLM 0.32 on CPU killed its engine ("CPU Generator does not use offset") on a seeded request whose prompt was
    prefilled in chunks; the launcher's patch keeps it serving."""
    codes = asyncio.run(_seeded_requests(vllm_url, 16))
    assert codes == [200] * 16
    assert httpx.get(vllm_url.removesuffix("/v1") + "/health", timeout=10).status_code == 200


def test_launcher_keeps_the_model_worker_in_the_engine_process_unless_told(monkeypatch):
    for name, value in {"VLLM_ENABLE_V1_MULTIPROCESSING": "1", "OMP_NUM_THREADS": "1",
                        "VLLM_CPU_OMP_THREADS_BIND": "0-1,3"}.items():
        monkeypatch.setenv(name, value)  # recorded, so what the launcher sets is undone
    monkeypatch.delenv("UCAI_VLLM_WORKER_PROCESS", raising=False)
    monkeypatch.delenv("VLLM_WORKER_MULTIPROC_METHOD", raising=False)
    monkeypatch.setattr(vllm_launcher, "_engine_core_start", None)
    get_settings.cache_clear()
    assert with_worker_in_engine(["serve", "/m"]) == ["serve", "/m", "--distributed-executor-backend", "uni"]
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # vLLM-CPU swaps `uni` back to `mp` otherwise
    assert os.environ["OMP_NUM_THREADS"] == "3"  # one thread per bound CPU, not the caller's single thread
    assert vllm_launcher._engine_core_start == "fork"
    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", "spawn")  # the caller's choice wins
    with_worker_in_engine(["serve", "/m"])
    assert vllm_launcher._engine_core_start == "spawn"
    for argv in (["serve", "/m", "--distributed-executor-backend", "mp"], ["serve", "/m", "-tp", "2"],
                 ["serve", "/m", "--tensor-parallel-size=2"], ["serve", "/m", "--pipeline-parallel-size", "2"],
                 ["--version"]):
        assert with_worker_in_engine(argv) == argv
    for mask in ("auto", "nobind", "0-1|2-3"):  # vLLM picks the cores, or one list per rank: its own processes
        monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", mask)
        assert bound_cpus(mask) is None and with_worker_in_engine(["serve", "/m"]) == ["serve", "/m"]
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-1")
    monkeypatch.setenv("UCAI_VLLM_WORKER_PROCESS", "true")
    get_settings.cache_clear()
    try:
        assert with_worker_in_engine(["serve", "/m"]) == ["serve", "/m"]
    finally:
        monkeypatch.delenv("UCAI_VLLM_WORKER_PROCESS")
        get_settings.cache_clear()


def test_the_engine_is_two_processes_not_three(vllm_url):
    """The session's real `vllm serve`: API server -> engine core, and no model-worker process under the core (the
    `uni` executor; each process that starts imports vLLM first, so that one cost a third of the start-up)."""
    import psutil  # vLLM's own dependency; bench/memory.py walks the stack's processes the same way

    assert httpx.get(f"{vllm_url}/models", timeout=10).status_code == 200
    servers = [pid for pid, _args in launcher_processes(vllm_url)]
    assert len(servers) == 1, servers
    tree = {p.pid: p.name() for p in psutil.Process(servers[0]).children(recursive=True)}
    assert [name for name in tree.values() if name.startswith("VLLM::")] == ["VLLM::EngineCore"], tree
    # ... and computes on more than one core, whatever OMP_NUM_THREADS the suite runs with (1): its CPU time under a
    # prefill-heavy load outgrows the wall time. (Its /proc environ can't tell: vLLM's process title overwrites it.)
    core = psutil.Process(next(pid for pid, name in tree.items() if name == "VLLM::EngineCore"))

    def cpu_s() -> float:
        times = core.cpu_times()
        return times.user + times.system

    before, started = cpu_s(), time.monotonic()
    assert asyncio.run(_seeded_requests(vllm_url, 8)) == [200] * 8
    ratio = (cpu_s() - before) / (time.monotonic() - started)
    assert ratio > 1.3, f"the engine core used {ratio:.2f} cores"


ENGINE_CORE_START = """
import os, sys
from services.runtime import vllm_launcher as launcher
launcher._patch_version_lookup()
argv = launcher.with_worker_in_engine(["serve", sys.argv[1]])
launcher._apply_patches()
from vllm.engine.arg_utils import EngineArgs
for start in (launcher._engine_core_start, None):  # as the launcher leaves it; as vLLM-CPU has it
    launcher._engine_core_start = start
    config = EngineArgs(model=sys.argv[1], enforce_eager=True, max_model_len=512,
                        distributed_executor_backend=argv[-1]).create_engine_config()
    print("START", config.parallel_config.distributed_executor_backend, os.environ["VLLM_WORKER_MULTIPROC_METHOD"])
"""


def test_an_engine_core_that_runs_its_worker_is_forked_not_spawned(model_path):
    """vLLM-CPU's config check sets VLLM_WORKER_MULTIPROC_METHOD=spawn, so its engine core would import vLLM afresh
    before loading the model; with the worker in the core (`uni`), the launcher has it forked. vLLM's own config
    check, in a process of its own (importing vLLM here would change this process's environment)."""
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": "0-1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    env.pop("VLLM_WORKER_MULTIPROC_METHOD", None)
    env.pop("UCAI_VLLM_WORKER_PROCESS", None)
    result = subprocess.run([sys.executable, "-c", ENGINE_CORE_START, str(model_path)], env=env, capture_output=True,
                            text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr[-3000:]
    starts = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("START ")]
    assert starts == [["uni", "fork"], ["uni", "spawn"]], result.stdout[-2000:]
