"""One error envelope for every 4xx/5xx: {"error": {"message", "type", "param", "code"}}."""
from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError as RedisFull
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ucai.schemas import ErrorDetail, ErrorEnvelope

log = logging.getLogger("ucai.gateway")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
          405: "invalid_request_error", 413: "request_too_large", 422: "invalid_request_error",
          429: "rate_limit_error", 503: "service_unavailable"}


class APIError(StarletteHTTPException):
    """An error with the envelope's fields. An HTTPException, so FastAPI passes it through body parsing."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 job: dict | None = None, headers: dict[str, str] | None = None):
        super().__init__(status, message, headers)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.job, self.headers = job, headers


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                   job: dict | None = None, headers: dict[str, str] | None = None,
                   checks: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorEnvelope(
        error=ErrorDetail(message=message, type=_TYPES.get(status, "server_error" if status >= 500 else
                                                           "invalid_request_error"), param=param, code=code),
        job=job,
        checks=checks,
    )
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def _field(loc: tuple) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return error_response(400, f"malformed JSON body: {first.get('ctx', {}).get('error', first['msg'])}",
                              code="invalid_json")
    param = _field(tuple(first.get("loc", ())))
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return error_response(422, f"{param or 'body'}: {message}{more}", param=param, code=first.get("type"))


async def _api_error(_: Request, exc: APIError) -> JSONResponse:
    return error_response(exc.status, exc.message, param=exc.param, code=exc.code, job=exc.job, headers=exc.headers)


async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


async def _redis_down(_: Request, exc: RedisConnectionError) -> JSONResponse:
    # Nothing accepted is lost: accepted jobs are in Redis' append-only file; the client retries.
    return error_response(503, f"the job queue (Redis) is unavailable: {exc}", code="queue_unavailable",
                          headers={"Retry-After": "2"})


async def _redis_full(_: Request, exc: RedisFull) -> JSONResponse:
    # Redis at its maxmemory (policy noeviction): new work is refused, nothing accepted is evicted; retry later.
    return error_response(503, "the job queue (Redis) is full: new work is refused until jobs finish or expire",
                          code="queue_full", headers={"Retry-After": "10"})


async def _redis_slow(_: Request, exc: RedisTimeoutError) -> JSONResponse:
    # A Redis that hangs (or a connection pool that stays full) past the socket timeout: the same answer as a Redis
    # that is down; the request may or may not have been queued, and a retry with its idempotency key is safe.
    return error_response(503, f"the job queue (Redis) did not answer in time: {exc}", code="queue_unavailable",
                          headers={"Retry-After": "2"})


async def _unhandled(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error")
    return error_response(500, f"internal error: {type(exc).__name__}", code="internal_error")


_ENVELOPE_REF = {"$ref": "#/components/schemas/ErrorEnvelope"}
# What the middlewares answer on any route that takes a JSON body (StrictJSON, BodySizeLimit).
_BODY_ERRORS = {"400": "The body is not strict JSON (`invalid_json`: malformed, not UTF-8, NaN/Infinity, a lone "
                "surrogate) or nests deeper than 64 (`json_too_deep`), or the request cannot be served.",
                "413": "The body is over UCAI_MAX_BODY_BYTES (`body_too_large`)."}


def document_errors(app: FastAPI) -> None:
    """Make the OpenAPI document say what the gateway answers: every 422 is the envelope (FastAPI documents its own
    `HTTPValidationError`, which this gateway never sends), and every route with a JSON body may answer the
    middlewares' 400 and 413. Clients and schemathesis read the document; it must not promise another shape."""
    build = app.openapi
    done = False

    def openapi() -> dict:
        nonlocal done
        schema = build()  # FastAPI builds it once and caches it on the app
        if done or "ErrorEnvelope" not in schema.get("components", {}).get("schemas", {}):
            return schema
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if "422" in responses:
                    responses["422"] = {"description": "A field is invalid (`param` names it).",
                                        "content": {"application/json": {"schema": _ENVELOPE_REF}}}
                if "requestBody" in operation:
                    for status, description in _BODY_ERRORS.items():
                        responses.setdefault(status, {"description": description,
                                                      "content": {"application/json": {"schema": _ENVELOPE_REF}}})
        components = schema["components"]["schemas"]
        for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's, referenced by nothing now
            if f"#/components/schemas/{unused}" not in json.dumps(schema):
                components.pop(unused, None)
        done = True
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(APIError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(RedisConnectionError, _redis_down)  # type: ignore[arg-type]
    app.add_exception_handler(RedisTimeoutError, _redis_slow)  # type: ignore[arg-type]
    app.add_exception_handler(RedisFull, _redis_full)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unhandled)
