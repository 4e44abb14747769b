"""Peak memory of the local stack (`ucai up`'s processes) under the `pipeline` load.

    python bench/memory.py [--prompts 64] [--max-tokens 48] [--kv-cache-gib N] [--chat-engine own|shared] [--quick]

Starts the stack exactly as `ucai up` composes it (services/runtime/local_stack.LocalStack, on free ports: own
redis-server, one `vllm serve` with LoRA for every role (a second one for chat with --chat-engine own), a worker,
the gateway), runs the pipeline benchmark's load through the gateway (every conversation at once), and samples the
memory of every process and its children every 0.25 s: resident (RSS) and proportional (PSS: a page shared by n
processes counts 1/n in each, so what a forked engine core still shares with its API server counts once; summed RSS
counts it twice). Per process: its sampled peaks and the kernel's high-water mark (VmHWM, summed over the process's
children); total: the peak of the sums over all of them at one instant. `--kv-cache-gib` sets
VLLM_CPU_KVCACHE_SPACE (the engines' KV-cache budget; default: the dtype's, ucai/engine_dtype.py).
ratio = total PSS peak ÷ 4 GiB (goal ≤ 1). Writes bench/results/memory.json.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import LOGS, ROOT, bench_prompts, print_table, write_results  # noqa: E402

GIB = 2**30


def _tree(pid: int) -> list:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _hwm(process) -> int:
    """The kernel's peak RSS of one process (VmHWM), bytes."""
    try:
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    """RSS and PSS of each named process tree, every `every_s`; keeps per-name peaks, the peaks of the sums, VmHWM."""

    def __init__(self, pids: dict[str, int], every_s: float = 0.25):
        super().__init__(daemon=True)
        self.pids, self.every_s = pids, every_s
        self.peak: dict[str, int] = dict.fromkeys(pids, 0)
        self.pss_peak: dict[str, int] = dict.fromkeys(pids, 0)
        self.hwm: dict[str, dict[int, int]] = {name: {} for name in pids}
        self.total_peak = self.total_pss_peak = 0
        self.stopped = threading.Event()

    def sample(self) -> None:
        import psutil

        total = total_pss = 0
        for name, pid in self.pids.items():
            rss = pss = 0
            for process in _tree(pid):
                try:
                    full = process.memory_full_info()  # smaps_rollup: rss and pss of the same moment
                except psutil.Error:
                    continue
                rss, pss = rss + full.rss, pss + full.pss
                self.hwm[name][process.pid] = max(self.hwm[name].get(process.pid, 0), _hwm(process))
            self.peak[name] = max(self.peak[name], rss)
            self.pss_peak[name] = max(self.pss_peak[name], pss)
            total, total_pss = total + rss, total_pss + pss
        self.total_peak = max(self.total_peak, total)
        self.total_pss_peak = max(self.total_pss_peak, total_pss)

    def run(self) -> None:
        while not self.stopped.is_set():
            self.sample()
            time.sleep(self.every_s)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--kv-cache-gib", type=int, default=None, help="VLLM_CPU_KVCACHE_SPACE of the engines")
    parser.add_argument("--chat-engine", choices=["own", "shared"], default=None,
                        help="UCAI_CHAT_ENGINE (default: the setting, `shared`)")
    parser.add_argument("--logs", type=Path, default=LOGS / "memory")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 8 prompts, 16 tokens")
    parser.add_argument("--out", type=Path, default=None, help="results file (default bench/results/memory.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.max_tokens = 8, 16
    from services.runtime.local_stack import LocalStack, free_port

    ports = {"port": free_port(), "vllm_port": free_port(), "chat_port": free_port(), "redis_port": free_port()}
    # LocalStack reads the settings of this process: every role on this run's engine port, own Redis.
    for role in ("GENERATOR", "CRITIC", "JUDGE", "CHAT"):
        os.environ[f"UCAI_{role}__BASE_URL"] = f"http://127.0.0.1:{ports['vllm_port']}/v1"
    for name in ("REDIS_URL", "UCAI_REDIS_URL"):
        os.environ.pop(name, None)
    os.environ["UCAI_WORKER_METRICS_PORT"] = "0"
    if args.chat_engine:
        os.environ["UCAI_CHAT_ENGINE"] = args.chat_engine
    if args.kv_cache_gib is not None:
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(args.kv_cache_gib)
    from bench.pipeline import run_pipeline
    from ucai.engine_dtype import engine_dtype
    from ucai.settings import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ucai-bench-redis-") as redis_dir:
        local = LocalStack(**ports, log_dir=args.logs, redis_dir=Path(redis_dir))
        try:
            local.up()
            headers = {}
            if not settings.api_keys_file and not settings.api_keys and (ROOT / ".ucai" / "dev-api-key").exists():
                headers = {"Authorization": f"Bearer {(ROOT / '.ucai' / 'dev-api-key').read_text().strip()}"}
            sampler = Sampler({name: p.pid for name, p in local.processes})
            sampler.sample()
            idle = dict(sampler.pss_peak)  # PSS, as the total
            sampler.start()
            prompts = bench_prompts(args.prompts)
            started = time.perf_counter()
            pipeline_args = argparse.Namespace(rounds=args.rounds, max_tokens=args.max_tokens)
            asyncio.run(run_pipeline(f"http://127.0.0.1:{ports['port']}", headers, prompts, pipeline_args))
            wall = time.perf_counter() - started
            sampler.stopped.set()
            sampler.join()
            sampler.sample()
        finally:
            local.down()
    rows = [{"process": name, "idle_mib": round(idle[name] / 2**20), "peak_rss_mib": round(sampler.peak[name] / 2**20),
             "peak_pss_mib": round(sampler.pss_peak[name] / 2**20),
             "vmhwm_mib": round(sum(sampler.hwm[name].values()) / 2**20)} for name in sampler.pids]
    rows.append({"process": "total (at one instant)", "idle_mib": round(sum(idle.values()) / 2**20),
                 "peak_rss_mib": round(sampler.total_peak / 2**20),
                 "peak_pss_mib": round(sampler.total_pss_peak / 2**20),
                 "vmhwm_mib": round(sum(sum(h.values()) for h in sampler.hwm.values()) / 2**20)})
    kv = os.environ.get("VLLM_CPU_KVCACHE_SPACE") or str(engine_dtype().kvcache_gib)
    print_table(rows, ["process", "idle_mib", "peak_rss_mib", "peak_pss_mib", "vmhwm_mib"],
                title=f"memory under the pipeline load ({len(prompts)} conversations in {wall:.0f}s; "
                f"KV cache {kv} GiB per engine, chat engine {settings.chat_engine})")
    total = sampler.total_pss_peak / GIB
    print(f"total peak {total:.2f} GiB PSS, {sampler.total_peak / GIB:.2f} GiB summed RSS (goal <= 4 GiB)")
    payload = {"rows": rows, "total_peak_gib": round(total, 2),
               "total_peak_rss_gib": round(sampler.total_peak / GIB, 2), "kv_cache_gib_per_engine": int(kv),
               "chat_engine": settings.chat_engine, "dtype": engine_dtype().dtype, "prompts": len(prompts),
               "max_tokens": args.max_tokens, "load_wall_s": round(wall, 1)}
    write_results("memory", payload, total / 4, out=args.out)
    return payload


if __name__ == "__main__":
    main()
