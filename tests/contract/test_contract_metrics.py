"""GET /metrics of the gateway and of a worker (README: Metrics), scraped before and after known traffic: every counter
moved by exactly that traffic — HTTP requests by route template and status (422, 404, 413 and unmatched paths too),
jobs by kind and outcome, the job-duration histogram, model calls by role and status, tokens by the `usage` the test
server answered — the queue gauges follow a backlog on a worker of concurrency 1 and the batch gauges a running batch,
role errors by type (retried 503s, a refusal, a role that is down), a Redis that is down or hangs still gives a 200
scrape with `ucai_redis_up 0`, and the key rule: open by default, 401 without a key under UCAI_METRICS_REQUIRE_KEY.

An own gateway + worker (its metrics port, concurrency 1) on an own queue: the counters see this module's traffic.
"""
from __future__ import annotations

import socket
import threading
import time
from collections import Counter

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.runtime.local_stack import free_port, stop, wait_http
from tests.conftest import Stack, make_stack
from tests.contract.conftest import FAST_ROLES
from tests.contract.helpers import assert_envelope, marker, wait_batch, wait_queue_idle
from tests.tcp_proxy import TcpProxy
from ucai.api_keys import create_key

pytestmark = pytest.mark.contract

Samples = dict[tuple[str, frozenset], float]


class MetricsStack:
    def __init__(self, stack: Stack, worker_metrics: str):
        self.stack, self.worker_metrics = stack, worker_metrics
        self.gateway_metrics = f"{stack.url}/metrics"

    @property
    def queue(self) -> str:
        return self.stack.env["UCAI_QUEUE_NAME"]


@pytest.fixture(scope="module")
def metrics_stack(redis_url, model_server, logs) -> MetricsStack:
    port = free_port()
    stack = make_stack(redis_url, model_server.url, logs, workers=1, UCAI_WORKER_METRICS_PORT=str(port),
                       UCAI_WORKER_CONCURRENCY="1", **FAST_ROLES)
    try:
        wait_http(f"http://127.0.0.1:{port}/metrics", stack.workers[0], 60, "worker /metrics")
        yield MetricsStack(stack, f"http://127.0.0.1:{port}/metrics")
    finally:
        stack.close()


@pytest.fixture
def api(metrics_stack) -> httpx.Client:
    with httpx.Client(base_url=metrics_stack.stack.url, timeout=60) as client:
        yield client


def scrape(url: str, headers: dict[str, str] | None = None) -> Samples:
    """Every sample of one scrape, parsed by prometheus_client's own parser (the exposition must parse)."""
    response = httpx.get(url, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def deltas(before: Samples, after: Samples, name: str) -> dict[frozenset, float]:
    """Samples of `name` that moved between two scrapes: {labels: change}."""
    keys = {k for k in (*before, *after) if k[0] == name}
    moved = {k[1]: after.get(k, 0.0) - before.get(k, 0.0) for k in keys}
    return {labels: change for labels, change in moved.items() if change}


def labels(**items: str) -> frozenset:
    return frozenset(items.items())


def critique(api: httpx.Client, word: str, **body) -> httpx.Response:
    return api.post("/critique", json={"prompt": f"How do I get back at my neighbour {word}?", "rounds": 1,
                                       "max_tokens": 12, "seed": 3, **body})


def test_counters_move_by_exactly_the_traffic(metrics_stack, api, model_server, redis_client):
    gateway_before, worker_before = scrape(metrics_stack.gateway_metrics), scrape(metrics_stack.worker_metrics)
    started = time.monotonic()
    words = [marker() for _ in range(3)]
    traces = []
    for word in words:
        response = critique(api, word)
        assert response.status_code == 200, response.text
        traces.append(response.json())
    assert_envelope(api.post("/critique", json={"prompt": ""}), 422, param="prompt")
    assert_envelope(api.get("/jobs/does-not-exist"), 404, code="job_not_found")
    assert api.get(f"/no/such/route/{words[0]}").status_code == 404
    assert_envelope(api.post("/critique", json={"prompt": "x" * 1_200_000}), 413, code="body_too_large")
    elapsed = time.monotonic() - started
    wait_queue_idle(redis_client, metrics_stack.queue)
    gateway_after, worker_after = scrape(metrics_stack.gateway_metrics), scrape(metrics_stack.worker_metrics)

    # Gateway: by route template (never the raw path), method and status — exactly these requests and no other
    # (the first scrape itself is counted once it answered).
    assert deltas(gateway_before, gateway_after, "ucai_http_requests_total") == {
        labels(route="/critique", method="POST", status="200"): 3,
        labels(route="/critique", method="POST", status="422"): 1,
        labels(route="/critique", method="POST", status="413"): 1,  # answered by the body limit, before routing
        labels(route="/jobs/{job_id}", method="GET", status="404"): 1,
        labels(route="unmatched", method="GET", status="404"): 1,
        labels(route="/metrics", method="GET", status="200"): 1,
    }
    assert deltas(gateway_before, gateway_after, "ucai_http_request_duration_seconds_count") == {
        labels(route="/critique", method="POST"): 5, labels(route="/jobs/{job_id}", method="GET"): 1,
        labels(route="unmatched", method="GET"): 1, labels(route="/metrics", method="GET"): 1}
    critique_seconds = deltas(gateway_before, gateway_after, "ucai_http_request_duration_seconds_sum")[
        labels(route="/critique", method="POST")]
    assert 0 < critique_seconds <= elapsed
    # Histogram buckets are cumulative: the +Inf bucket moved with the count.
    assert deltas(gateway_before, gateway_after, "ucai_http_request_duration_seconds_bucket")[
        labels(route="/critique", method="POST", le="+Inf")] == 5

    # Worker: three critique jobs completed, timed, none left in flight.
    assert deltas(worker_before, worker_after, "ucai_jobs_total") == {labels(kind="critique", outcome="completed"): 3}
    assert deltas(worker_before, worker_after, "ucai_job_duration_seconds_count") == {labels(kind="critique"): 3}
    job_seconds = deltas(worker_before, worker_after, "ucai_job_duration_seconds_sum")[labels(kind="critique")]
    assert 0 < job_seconds <= elapsed
    assert value(worker_after, "ucai_jobs_in_flight", kind="critique") == 0

    # Model calls: a one-round critique is answer (generator), critique (critic), revision (generator).
    assert all(t["usage"]["requests"] == 3 for t in traces), [t["usage"] for t in traces]
    assert deltas(worker_before, worker_after, "ucai_role_requests_total") == {
        labels(role="generator", status="200"): 6, labels(role="critic", status="200"): 3}
    assert deltas(worker_before, worker_after, "ucai_role_request_duration_seconds_count") == {
        labels(role="generator"): 6, labels(role="critic"): 3}
    assert deltas(worker_before, worker_after, "ucai_role_errors_total") == {}

    # Tokens: exactly the `usage` the test server answered, by the role that made each call.
    expected: Counter = Counter()
    for word, trace in zip(words, traces, strict=True):
        calls = sorted(model_server.requests("chat", containing=word, status=200), key=lambda c: c.at)
        assert len(calls) == 3
        for role, call in zip(("generator", "critic", "generator"), calls, strict=True):
            expected[(role, "prompt")] += call.response["usage"]["prompt_tokens"]
            expected[(role, "completion")] += call.response["usage"]["completion_tokens"]
        assert trace["usage"]["prompt_tokens"] == sum(c.response["usage"]["prompt_tokens"] for c in calls)
    assert deltas(worker_before, worker_after, "ucai_tokens_total") == {
        labels(role=role, direction=direction): count for (role, direction), count in expected.items()}


def wait_for(check, timeout_s: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_queue_gauges_follow_a_backlog(metrics_stack, api, model_server, redis_client):
    idle = scrape(metrics_stack.gateway_metrics)
    assert value(idle, "ucai_redis_up") == 1
    assert (value(idle, "ucai_queue_depth"), value(idle, "ucai_queue_pending"),
            value(idle, "ucai_queue_oldest_job_age_seconds")) == (0, 0, 0)

    slow, fast = marker(), marker()
    model_server.delay_containing = {slow: 1.5}  # the first job holds the only slot for ~4.5 s (3 calls)
    submitted = time.time()
    first = critique(api, slow, wait=False)
    assert first.status_code == 202, first.text
    accepted = time.time()
    wait_for(lambda: value(scrape(metrics_stack.worker_metrics), "ucai_jobs_in_flight", kind="critique") == 1,
             what="the first job to start")
    queued = [critique(api, f"{fast} {i}", wait=False) for i in range(2)]
    assert all(r.status_code == 202 for r in queued), [r.text for r in queued]

    before_scrape = time.time()
    backlog = scrape(metrics_stack.gateway_metrics)
    after_scrape = time.time()
    assert value(backlog, "ucai_redis_up") == 1
    assert value(backlog, "ucai_queue_depth") == 2  # not yet delivered: the worker has one slot, and it is busy
    assert value(backlog, "ucai_queue_pending") == 1  # delivered and running
    # The oldest is the running job: its age counts from its stream id, stamped while it was being accepted.
    age = value(backlog, "ucai_queue_oldest_job_age_seconds")
    assert before_scrape - accepted - 0.05 <= age <= after_scrape - submitted + 0.05, (age, accepted - submitted)
    assert value(scrape(metrics_stack.worker_metrics), "ucai_jobs_in_flight", kind="critique") == 1

    for job in [first, *queued]:
        wait_for(lambda job=job: api.get(f"/jobs/{job.json()['id']}").json()["status"] == "completed",
                 timeout_s=30, what="the backlog to finish")
    wait_queue_idle(redis_client, metrics_stack.queue)
    done = scrape(metrics_stack.gateway_metrics)
    assert (value(done, "ucai_queue_depth"), value(done, "ucai_queue_pending"),
            value(done, "ucai_queue_oldest_job_age_seconds")) == (0, 0, 0)
    assert value(scrape(metrics_stack.worker_metrics), "ucai_jobs_in_flight", kind="critique") == 0


def test_batch_gauges_count_a_running_batch(metrics_stack, api, model_server):
    word = marker()
    before = scrape(metrics_stack.gateway_metrics)
    assert value(before, "ucai_batches_scan_truncated") == 0
    model_server.delay_containing = {word: 0.5}
    items = [{"id": f"r{i}", "prompt": f"Request {i} about my neighbour {word}"} for i in range(3)]
    response = api.post("/batches", json={"stage": "categorise", "constitution": "ethical",
                                          "input": {"records": items}})
    assert response.status_code == 202, response.text
    running = scrape(metrics_stack.gateway_metrics)
    assert deltas(before, running, "ucai_batches") == {labels(status="running"): 1}
    records = deltas(before, running, "ucai_batch_records")
    assert sum(records.values()) == 3 and set(records) <= {labels(state=s) for s in ("done", "failed", "pending")}
    assert records.get(labels(state="pending"), 0) >= 1  # one slot, 0.5 s a call: not all of them are done yet

    assert wait_batch(api, response.json()["id"])["status"] == "completed"
    finished = scrape(metrics_stack.gateway_metrics)
    assert deltas(before, finished, "ucai_batches") == {labels(status="completed"): 1}
    assert deltas(before, finished, "ucai_batch_records") == {}  # only running batches' records are counted


def test_role_errors_by_type_on_the_gateways_chat_calls(metrics_stack, api, model_server):
    """The gateway's own model calls (the chat routes) are counted like the worker's: a 503 retried once then given
    up, a refusal (400, not retried), a role that does not answer at all, and a 200 with its tokens."""
    body = {"model": "base", "max_tokens": 8, "messages": [{"role": "user", "content": f"Hello {marker()}"}]}
    before = scrape(metrics_stack.gateway_metrics)

    answered = api.post("/v1/chat/completions", json=body)
    assert answered.status_code == 200, answered.text
    usage = answered.json()["usage"]
    model_server.fail(503, endpoints={"chat"})
    assert_envelope(api.post("/v1/chat/completions", json=body), 503, code="model_unavailable")
    model_server.recover()
    refused = marker()
    model_server.reject_containing = refused
    rejected = {**body, "messages": [{"role": "user", "content": f"Hello {refused}"}]}
    assert api.post("/v1/chat/completions", json=rejected).status_code == 400
    model_server.recover()
    model_server.stop()
    assert_envelope(api.post("/v1/chat/completions", json=body), 503, code="model_unavailable")
    model_server.start()
    after = scrape(metrics_stack.gateway_metrics)

    # max_retries 1 (FAST_ROLES): two tries of each unavailable call.
    assert deltas(before, after, "ucai_role_requests_total") == {
        labels(role="chat", status="200"): 1, labels(role="chat", status="503"): 2,
        labels(role="chat", status="400"): 1, labels(role="chat", status="error"): 2}
    assert deltas(before, after, "ucai_role_errors_total") == {
        labels(role="chat", type="retryable"): 2, labels(role="chat", type="rejected"): 1,
        labels(role="chat", type="connection"): 2, labels(role="chat", type="gave_up"): 2}
    assert deltas(before, after, "ucai_tokens_total") == {
        labels(role="chat", direction="prompt"): usage["prompt_tokens"],
        labels(role="chat", direction="completion"): usage["completion_tokens"]}
    assert deltas(before, after, "ucai_http_requests_total") == {
        labels(route="/v1/chat/completions", method="POST", status="200"): 1,
        labels(route="/v1/chat/completions", method="POST", status="503"): 2,
        labels(route="/v1/chat/completions", method="POST", status="400"): 1,
        labels(route="/metrics", method="GET", status="200"): 1}


def test_a_worker_whose_metrics_port_is_taken_still_runs(metrics_stack, logs):
    """Two workers on one host with one port: the second logs it and runs without metrics instead of dying."""
    stack = metrics_stack.stack
    second = stack.start_worker()
    log = logs / f"worker-{len(stack.workers) - 1}-{metrics_stack.queue}.log"
    try:
        wait_for(lambda: "worker metrics not served" in (log.read_text() if log.exists() else ""), what="the warning")
        time.sleep(1.0)
        assert second.poll() is None, log.read_text()
        scrape(metrics_stack.worker_metrics)  # the first worker still serves its own
    finally:
        stop(second)
        stack.workers.remove(second)


class BlackHole:
    """A TCP server that accepts and never answers: a hung Redis."""

    def __init__(self, port: int):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture(scope="module")
def keyed(redis_url, model_server, logs, tmp_path_factory):
    """Two gateways with API keys (no worker): one with the default (metrics open), reaching Redis through a proxy
    the test can take away; one with UCAI_METRICS_REQUIRE_KEY."""
    root = tmp_path_factory.mktemp("metrics-keys")
    keys_file = root / "api-keys.json"
    key = create_key(keys_file, "test_metrics", ["chat"])
    redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    proxy_port = free_port()
    proxy, proxy_closed = TcpProxy(proxy_port, redis_port), threading.Event()  # closed once: by the test, else here
    proxy.start()
    common = {"UCAI_API_KEYS_FILE": str(keys_file), "UCAI_AUDIT_LOG": str(root / "audit.jsonl"),
              "UCAI_METRICS_REDIS_TIMEOUT_S": "0.5", "UCAI_REDIS_SOCKET_TIMEOUT_S": "2"}
    stacks = []
    try:
        stacks.append(make_stack(f"redis://127.0.0.1:{proxy_port}/0", model_server.url, logs, workers=0, **common))
        stacks.append(make_stack(redis_url, model_server.url, logs, workers=0, UCAI_METRICS_REQUIRE_KEY="true",
                                 **common))
        yield {"open": stacks[0], "closed": stacks[1], "key": key, "proxy": proxy, "proxy_closed": proxy_closed,
               "proxy_port": proxy_port}
    finally:
        for stack in stacks:
            stack.close()
        if not proxy_closed.is_set():
            proxy.close()


def test_metrics_need_a_key_only_when_configured(keyed):
    open_url, closed_url = keyed["open"].url, keyed["closed"].url
    # Keys configured, metrics_require_key off (the default): /metrics is open, other routes are not.
    assert_envelope(httpx.get(f"{open_url}/jobs/x"), 401, code="missing_api_key")
    assert value(scrape(f"{open_url}/metrics"), "ucai_redis_up") == 1
    # UCAI_METRICS_REQUIRE_KEY: 401 without a key or with a wrong one; any valid key (here: chat scope) reads them.
    assert_envelope(httpx.get(f"{closed_url}/metrics"), 401, code="missing_api_key")
    assert_envelope(httpx.get(f"{closed_url}/metrics", headers={"Authorization": "Bearer ucai-nope-nope"}), 401,
                    code="invalid_api_key")
    samples = scrape(f"{closed_url}/metrics", headers={"Authorization": f"Bearer {keyed['key']}"})
    assert value(samples, "ucai_redis_up") == 1
    assert value(samples, "ucai_http_requests_total", route="/metrics", method="GET", status="401") == 2


def test_scrape_answers_while_redis_is_down_or_hangs(keyed):
    url = f"{keyed['open'].url}/metrics"
    up = scrape(url)
    assert value(up, "ucai_redis_up") == 1 and ("ucai_queue_depth", frozenset()) in up
    keyed["proxy"].close()  # Redis refuses connections
    keyed["proxy_closed"].set()
    started = time.monotonic()
    down = scrape(url)
    assert time.monotonic() - started < 5
    assert value(down, "ucai_redis_up") == 0
    assert ("ucai_queue_depth", frozenset()) not in down  # absent, not stale
    assert value(down, "ucai_http_requests_total", route="/metrics", method="GET", status="200") >= 1
    hole = BlackHole(keyed["proxy_port"])  # Redis accepts and never answers: the scrape's own timeout (0.5 s)
    try:
        started = time.monotonic()
        hung = scrape(url)
        # Bounded by the metrics timeout (0.5 s), not by the Redis socket timeout (2 s) of the gateway's connections.
        assert 0.45 <= time.monotonic() - started < 1.9
        assert value(hung, "ucai_redis_up") == 0
    finally:
        hole.close()
