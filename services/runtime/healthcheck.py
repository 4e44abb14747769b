"""The worker container's healthcheck: `python -m services.runtime.healthcheck` exits 0 while this container's worker
writes its heartbeat (services/runtime/heartbeat.py), not merely while Redis answers.

A module of its own, not a flag of the worker: compose runs it every 15 s in each worker container, and it imports
only the heartbeat, Redis and the settings — not the worker's queue, job kinds and HTTP clients (0.4 s against 1.2 s
of imports on a Xeon core, several seconds on a slow one, each time).
"""
from __future__ import annotations

import argparse
import asyncio
import sys

from redis.asyncio import Redis

from services.runtime import heartbeat
from ucai.settings import Settings, get_settings


async def check(settings: Settings) -> int:
    """0 when this container's worker heartbeat is fresh, else 1 with the reason on stderr."""
    try:
        url = settings.redis_connection_url() or "redis://127.0.0.1:6379/0"
        async with Redis.from_url(url, **settings.redis_client_options()) as redis:
            problem = await heartbeat.check(redis, settings)
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    print(f"healthy: worker {heartbeat.worker_name(settings)!r} is beating")
    return 0


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    raise SystemExit(asyncio.run(check(get_settings())))


if __name__ == "__main__":
    main()
