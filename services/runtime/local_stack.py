"""`ucai up`: the whole stack on one machine — Redis, `vllm serve` on the bundled model, a worker, the gateway.

Ctrl-C (or SIGTERM) stops everything, in reverse order. Tests start the same pieces
with the functions below, on other ports.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx

from ucai import chat_adapters
from ucai.api_keys import ensure_dev_key
from ucai.engine_dtype import EngineDtype, engine_dtype
from ucai.layout import Layout
from ucai.local_redis import start_redis
from ucai.model_prepare import resolve_model_path
from ucai.settings import ROLE_NAMES, get_settings

LOCAL_HOSTS = {"127.0.0.1", "localhost", "0.0.0.0"}
# Jobs the local worker runs at once (unless UCAI_WORKER_CONCURRENCY says otherwise): they wait on the engine, which
# batches them, so a worker holding 64 keeps the engine as busy as direct calls do (bench/pipeline.py; at the
# settings' default of 8 the pipeline reached 0.48 of the raw engine's conversations/s).
LOCAL_WORKER_CONCURRENCY = 64


def free_port() -> int:
    """A free loopback port (tests and benchmarks start their servers on these)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def engine_cpus(most: int = 2) -> str:
    """VLLM_CPU_OMP_THREADS_BIND for an engine: the first `most` CPUs this process may run on ("0-1" on a plain
    2-core machine). From the affinity, not "0-1" as such: under `taskset` (or one test stream of `make test`, pinned
    to its own core) an engine bound outside it would compute on a core another process was given."""
    cpus = sorted(os.sched_getaffinity(0))[:most]
    if cpus == list(range(cpus[0], cpus[-1] + 1)):
        return f"{cpus[0]}-{cpus[-1]}" if len(cpus) > 1 else str(cpus[0])
    return ",".join(map(str, cpus))


def vllm_env(dtype: EngineDtype) -> dict[str, str]:
    env = dict(os.environ)
    # GiB; unset, vLLM reserves ~90 % of RAM. Sized to the dtype: fp32 entries take twice the bytes.
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(dtype.kvcache_gib))
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", engine_cpus())
    env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    return env


def service_env(**extra: str) -> dict[str, str]:
    """Workers and gateway: one OpenMP thread, so nothing spin-waits against vLLM's cores."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **extra})
    return env


def start_vllm(model_path: str, port: int, served_name: str = "smollm2", max_model_len: int = 8192,
               log: Path | None = None, extra_args: list[str] | None = None, dtype: EngineDtype | None = None,
               enforce_eager: bool | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`vllm serve` on loopback; dtype and eager mode default to the settings (benchmarks pass both), the KV block
    size is the settings'."""
    settings = get_settings()
    dtype = dtype or engine_dtype()
    eager = settings.vllm_enforce_eager if enforce_eager is None else enforce_eager
    command = [
        sys.executable, "-m", "services.runtime.vllm_launcher", "serve", model_path, "--served-model-name", served_name,
        "--host", "127.0.0.1", "--port", str(port), "--dtype", dtype.dtype, *(["--enforce-eager"] if eager else []),
        "--max-model-len", str(max_model_len), "--max-logprobs", "20",
        "--block-size", str(settings.vllm_block_size), *(extra_args or []),
    ]
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    return subprocess.Popen(command, env={**vllm_env(dtype), **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def start_worker(env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    """Concurrency comes from UCAI_WORKER_CONCURRENCY in env (default 8)."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen([sys.executable, "-m", "services.runtime.worker"],
                            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def start_gateway(env: dict[str, str], port: int, log: Path | None = None) -> subprocess.Popen:
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "gateway.app:create_app", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )


def wait_http(url: str, process: subprocess.Popen | None, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} while starting")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what} did not answer {url} within {timeout_s:.0f}s")


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # the whole group: vLLM has an engine child
    except ProcessLookupError:
        if process.poll() is None:
            process.send_signal(sig)


def stop(process: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """SIGTERM the process group, SIGKILL it after timeout_s."""
    if process.poll() is not None:
        return
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        process.wait(timeout_s)


@dataclass
class LocalStack:
    port: int = 8000
    vllm_port: int = 8001
    chat_port: int = 8002
    redis_port: int = 6380
    workers: int = 1
    adapters: list[str] = field(default_factory=list)  # "ethical/ppo": trained LoRAs served next to the base model
    log_dir: Path = Path(".ucai/logs")
    redis_dir: Path | None = None  # default: <UCAI_CACHE_DIR>/redis
    processes: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def up(self) -> None:
        settings = get_settings()
        # --adapter narrows the chat adapters; by default every trained one (UCAI_CHAT_ADAPTERS). A missing adapter
        # fails here, before anything starts.
        adapters = (chat_adapters.adapters_for(self.adapters) if self.adapters
                    else chat_adapters.selected(settings.chat_adapters))
        lora_args = chat_adapters.serve_args(adapters, runtime=settings.chat_runtime_lora)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = service_env()
        env.setdefault("UCAI_WORKER_CONCURRENCY", str(LOCAL_WORKER_CONCURRENCY))
        if settings.api_keys_file is None and not settings.api_keys:  # never an open gateway by default
            keys_file, dev_key = ensure_dev_key(Path(".ucai"))
            env["UCAI_API_KEYS_FILE"] = str(keys_file.resolve())
            print(f"api key    {dev_key} (every scope; send as Authorization: Bearer)")
        started = time.monotonic()
        if not settings.redis_url:
            redis_dir = self.redis_dir or Layout.from_settings(settings).redis_dir()
            redis = start_redis(redis_dir, self.redis_port)
            self.processes.append(("redis", redis))
            env["REDIS_URL"] = f"redis://127.0.0.1:{self.redis_port}/0"
            print(f"redis      redis://127.0.0.1:{self.redis_port}/0 (own, AOF in {redis_dir})")
        # Start vllm serve only for roles that point at this machine's default port. One engine, with LoRA, serves
        # every role (UCAI_CHAT_ENGINE=shared): with the launcher's LoRA kernels the base model keeps ~98 % of its
        # throughput there (bench/engine_modes.py), and a second engine would double the memory and the start.
        # UCAI_CHAT_ENGINE=own gives the chat role an engine of its own.
        local_roles = [r for r in ROLE_NAMES if _is_local(settings.role(r).base_url, self.vllm_port)]
        own_chat = "chat" in local_roles and settings.chat_engine == "own"
        engines = []  # (name, port, roles, LoRA flags)
        job_roles = [r for r in local_roles if not (own_chat and r == "chat")]
        if job_roles:
            engines.append(("vllm", self.vllm_port, job_roles, [] if own_chat else lora_args))
        if own_chat:
            engines.append(("vllm-chat", self.chat_port, ["chat"], lora_args))
            env["UCAI_CHAT__BASE_URL"] = f"http://127.0.0.1:{self.chat_port}/v1"
        if engines:
            model = resolve_model_path(settings)
            dtype = engine_dtype()
            print(f"  dtype    {dtype.dtype}: {dtype.reason}; "
                  f"{'eager' if settings.vllm_enforce_eager else 'compiled'} (UCAI_VLLM_ENFORCE_EAGER)")
        for name, port, roles, extra in engines:  # started together: they load in parallel
            runtime = chat_adapters.RUNTIME_LORA_ENV if extra and settings.chat_runtime_lora else None
            process = start_vllm(model, port, settings.role(roles[0]).model, settings.max_model_len,
                                 self.log_dir / f"{name}.log", extra_args=extra, dtype=dtype, env=runtime)
            self.processes.append((name, process))
            print(f"vllm serve {model} on :{port} for {', '.join(roles)}{' with LoRA' if extra else ''} "
                  f"(log {self.log_dir / f'{name}.log'})")
        for name, port, _roles, extra in engines:
            wait_http(f"http://127.0.0.1:{port}/v1/models", dict(self.processes)[name], 600, name)
            for adapter, path in adapters.items() if extra else ():
                print(f"  LoRA     {adapter} ({path}) as model {adapter!r} on :{port}")
            if extra and settings.chat_runtime_lora:
                print("  LoRA     adapters trained later: POST /admin/adapters/reload "
                      "(also at the end of `ucai train`)")
        for i in range(self.workers):  # each serves its Prometheus /metrics on a port of its own (README: Metrics)
            metrics_port = settings.worker_metrics_port + i if settings.worker_metrics_port else 0
            self.processes.append((f"worker-{i}", start_worker({**env, "UCAI_WORKER_METRICS_PORT": str(metrics_port)},
                                                               self.log_dir / f"worker-{i}.log")))
            if metrics_port:
                print(f"worker-{i}   metrics on http://{settings.worker_metrics_host}:{metrics_port}/metrics")
        gateway = start_gateway(env, self.port, self.log_dir / "gateway.log")
        self.processes.append(("gateway", gateway))
        wait_http(f"http://127.0.0.1:{self.port}/ready", gateway, 120, "gateway")
        print(f"ready in {time.monotonic() - started:.1f}s: http://127.0.0.1:{self.port}  (docs: /docs; Ctrl-C stops)")

    def watch(self) -> int:
        while True:
            for name, process in self.processes:
                if process.poll() is not None:
                    print(f"{name} exited with code {process.returncode}; stopping the stack", file=sys.stderr)
                    return 1
            time.sleep(1)

    def down(self) -> None:
        for _name, process in reversed(self.processes):
            stop(process)
        self.processes.clear()


def _is_local(base_url: str, port: int) -> bool:
    parsed = urlparse(base_url)
    return parsed.hostname in LOCAL_HOSTS and parsed.port == port


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8000, help="gateway port")
    parser.add_argument("--vllm-port", type=int, default=8001, help="port of the local vllm serve")
    parser.add_argument("--chat-port", type=int, default=None,
                        help="port of the chat role's own vllm serve (default: --vllm-port + 1)")
    parser.add_argument("--redis-port", type=int, default=6380, help="port of the own redis-server (no REDIS_URL)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--adapter", action="append", default=[], metavar="CONSTITUTION/STAGE",
                        help="serve only these trained LoRAs (latest run of constitution/stage, e.g. ethical/ppo); "
                        "default: every one found (UCAI_CHAT_ADAPTERS)")
    parser.add_argument("--redis-dir", type=Path, default=None,
                        help="AOF folder of the own redis-server (default: <UCAI_CACHE_DIR>/redis)")
    parser.add_argument("--log-dir", type=Path, default=Path(".ucai/logs"), help="process logs")
    args = parser.parse_args(argv)
    stack = LocalStack(port=args.port, vllm_port=args.vllm_port, chat_port=args.chat_port or args.vllm_port + 1,
                       redis_port=args.redis_port, workers=args.workers, adapters=args.adapter,
                       log_dir=args.log_dir, redis_dir=args.redis_dir)
    # Both stop the stack; SIGINT explicitly, since a shell's background job starts with it ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    code = 0
    try:
        stack.up()
        code = stack.watch()
    except KeyboardInterrupt:
        print("\nstopping...")
    except (RuntimeError, TimeoutError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    finally:
        stack.down()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
