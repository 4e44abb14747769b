"""The error envelope {"error": {"message", "type", "param", "code"}} on every failure path the gateway has:
400 invalid_json, 404 (unknown route, unknown job, unknown constitution), 405 (wrong method, with Allow),
413 body_too_large (declared and streamed), 422 naming the field, and 500 from the unhandled-exception handler
(reached for real: a job record in Redis that is not the shape the gateway stored). Also GET /constitutions,
GET /constitutions/{name} and the OpenAPI document listing every router."""
from __future__ import annotations

import httpx
import pytest

from tests.contract.helpers import assert_envelope, marker, wait_queue_idle

pytestmark = pytest.mark.contract

ROUTES = {"/critique": {"post"}, "/compare": {"post"}, "/rank": {"post"}, "/batches": {"post"},
          "/batches/{batch_id}": {"get", "delete"}, "/batches/{batch_id}/results": {"get"},
          "/jobs/{job_id}": {"get"}, "/constitutions": {"get"}, "/constitutions/{name}": {"get"},
          "/health": {"get"}, "/ready": {"get"}}


def test_malformed_json_is_400_invalid_json(api):
    response = api.post("/critique", content=b'{"prompt": "hi",', headers={"content-type": "application/json"})
    body = assert_envelope(response, 400, code="invalid_json")
    assert body["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("method", ["get", "post", "delete"])
def test_unknown_route_is_404_enveloped(api, method):
    body = assert_envelope(api.request(method.upper(), "/nowhere"), 404)
    assert body["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("GET", "/critique", "POST"), ("PUT", "/compare", "POST"), ("DELETE", "/jobs/x", "GET"),
    ("POST", "/health", "GET"), ("PATCH", "/batches/x", "GET"), ("POST", "/constitutions", "GET"),
])
def test_wrong_method_is_405_enveloped_with_allow(api, method, path, allowed):
    response = api.request(method, path)
    body = assert_envelope(response, 405)
    assert body["error"]["type"] == "invalid_request_error"
    assert allowed in response.headers["allow"]


def test_unknown_job_is_404(api):
    assert_envelope(api.get("/jobs/does-not-exist"), 404, code="job_not_found", param="job_id")


def test_body_over_the_limit_is_413(api, model_server):
    word = marker()
    assert_envelope(api.post("/critique", json={"prompt": word + "x" * 1_200_000}), 413, code="body_too_large")

    def chunks():  # no Content-Length: counted while it streams
        yield f'{{"prompt": "{word}'.encode()
        for _ in range(1300):
            yield b"x" * 1000
        yield b'"}'

    streamed = api.post("/critique", content=chunks(), headers={"content-type": "application/json"})
    assert_envelope(streamed, 413, code="body_too_large")
    assert model_server.count("chat", containing=word) == 0


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/critique", {"prompt": ""}, "prompt"),
    ("/critique", {"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}, "messages"),
    ("/critique", {"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    ("/critique", {"prompt": "hi", "rounds": 9}, "rounds"),
    ("/critique", {"prompt": "hi", "colour": "red"}, "colour"),
    ("/compare", {"prompt": "hi", "responses": ["only one"]}, "responses"),
    ("/compare", {"prompt": "hi", "responses": ["a", "b"], "method": "vibes"}, "method"),
    ("/rank", {"prompt": "hi", "responses": ["a", "b"], "max_pairs": 0}, "max_pairs"),
    ("/batches", {"stage": "categorise"}, "input"),
])
def test_invalid_body_is_422_naming_the_field(api, path, body, param):
    response = api.post(path, json=body)
    error = assert_envelope(response, 422, param=param)["error"]
    assert error["type"] == "invalid_request_error" and error["code"]


@pytest.mark.parametrize("path", ["/critique", "/compare", "/rank"])
def test_unknown_constitution_and_principle_are_422(api, path):
    body = {"prompt": "hi", **({"responses": ["a", "b"]} if path != "/critique" else {})}
    error = assert_envelope(api.post(path, json={**body, "constitution": "nope"}), 422,
                            code="unknown_constitution", param="constitution")["error"]
    assert "ethical" in error["message"]
    assert_envelope(api.post(path, json={**body, "principles": ["peace", "violence"]}), 422,
                    code="unknown_principle", param="principles")


def test_unhandled_exception_is_500_enveloped(api, redis_client, contract_stack):
    """The gateway's last-resort handler: a job record in Redis that is not the hash the gateway wrote
    (corrupted or written by something else) makes GET /jobs/{id} fail inside the gateway."""
    job = api.post("/critique", json={"prompt": f"Hello {marker()}", "max_tokens": 4})
    assert job.status_code == 200, job.text
    job_id = job.json()["id"]
    wait_queue_idle(redis_client, contract_stack.env["UCAI_QUEUE_NAME"])  # the worker is done with it
    status_keys = [k for k in redis_client.scan_iter(match=f"*{job_id}*") if redis_client.type(k) == b"hash"]
    assert status_keys, "no status record of the job in Redis"
    for key in status_keys:
        redis_client.delete(key)
        redis_client.set(key, "not a hash")
    response = api.get(f"/jobs/{job_id}")
    body = assert_envelope(response, 500, code="internal_error")
    assert body["error"]["type"] == "server_error"
    assert "Traceback" not in response.text and "not a hash" not in response.text
    # The process carries on. (A fresh connection: after an unhandled exception the server closes this one.)
    assert httpx.get(f"{contract_stack.url}/health").status_code == 200


def test_constitutions_list_and_detail(api):
    listed = api.get("/constitutions")
    assert listed.status_code == 200
    summaries = {c["name"]: c for c in listed.json()["data"]}
    assert {"ethical", "unethical"} <= set(summaries)
    assert summaries["unethical"]["inverse_of"] == "ethical"
    for name in ("ethical", "unethical"):
        detail = api.get(f"/constitutions/{name}")
        assert detail.status_code == 200
        full = detail.json()
        assert full["name"] == name
        assert [p["name"] for p in full["principles"]] == [p["name"] for p in summaries[name]["principles"]]
        assert [len(p["pairs"]) for p in full["principles"]] == [p["pairs"] for p in summaries[name]["principles"]]
    assert summaries["ethical"]["hash"] != summaries["unethical"]["hash"]
    assert_envelope(api.get("/constitutions/nope"), 404, code="unknown_constitution", param="name")


def test_openapi_lists_every_router(api):
    response = api.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path, methods in ROUTES.items():
        assert path in paths and methods <= set(paths[path]), (path, sorted(paths.get(path, {})))
    assert api.get("/docs").status_code == 200
