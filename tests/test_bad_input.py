"""Bad input → a 4xx with the one error envelope naming the field; never a 500, nothing queued."""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _envelope(response, status: int, param: str | None = None, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type"} and error["message"]
    if param is not None:
        assert error.get("param") == param, error
    if code is not None:
        assert error.get("code") == code, error
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   \n\t"}, "prompt"),
        ({}, "messages"),
        ({"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
        ({"prompt": "hi", "rounds": 0}, "rounds"),
        ({"prompt": "hi", "rounds": 9}, "rounds"),
        ({"prompt": "hi", "rounds": "many"}, "rounds"),
        ({"prompt": "hi", "temperature": 5}, "temperature"),
        ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "hi", "colour": "red"}, "colour"),
    ],
)
def test_invalid_body_is_422_naming_the_field(client, body, param):
    _envelope(client.post("/critique", json=body), 422, param=param)


def test_unknown_constitution(client):
    error = _envelope(client.post("/critique", json={"prompt": "hi", "constitution": "nope"}), 422,
                      param="constitution", code="unknown_constitution")
    assert "ethical" in error["message"]


def test_unknown_principle(client):
    _envelope(client.post("/critique", json={"prompt": "hi", "principles": ["peace", "violence"]}), 422,
              param="principles", code="unknown_principle")


def test_prompt_longer_than_context(client):
    _envelope(client.post("/critique", json={"prompt": "lock " * 6000}), 400, param="prompt",
              code="context_length_exceeded")


def test_body_over_size_limit(client):
    _envelope(client.post("/critique", json={"prompt": "x" * 1_200_000}), 413, code="body_too_large")


def test_streamed_body_over_size_limit(client):
    def chunks():
        yield b'{"prompt": "'
        for _ in range(1300):
            yield b"x" * 1000
        yield b'"}'

    response = client.post("/critique", content=chunks(), headers={"content-type": "application/json"})
    _envelope(response, 413, code="body_too_large")


def test_malformed_json(client):
    _envelope(client.post("/critique", content=b'{"prompt": "hi",', headers={"content-type": "application/json"}),
              400, code="invalid_json")


def test_unknown_job_is_404(client):
    _envelope(client.get("/jobs/does-not-exist"), 404, param="job_id", code="job_not_found")


def test_unknown_route_is_enveloped(client):
    _envelope(client.get("/nowhere"), 404)


def test_refused_requests_queue_nothing(client, redis_url, stack):
    import redis

    r = redis.Redis.from_url(redis_url)
    queue = stack.env["UCAI_QUEUE_NAME"]
    before = r.xinfo_stream(queue)["entries-added"]  # not XLEN: workers trim acknowledged entries
    client.post("/critique", json={"prompt": ""})
    client.post("/critique", json={"prompt": "hi", "constitution": "nope"})
    client.post("/critique", json={"prompt": "lock " * 6000})
    assert r.xinfo_stream(queue)["entries-added"] == before
