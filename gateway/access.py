"""Who is calling, and what they may do: API keys, scopes, per-key rate limits, the audit log (README: Access control).

The unethical models and constitutions write harmful text by design, so when keys are configured every route needs
one (`Authorization: Bearer <key>`, as the openai client sends it, or `X-API-Key`) except the probes and the static
page. Scopes: `chat` (base and non-unethical models and constitutions) ⊂ `research` (adds every `unethical*` model and
every unethical constitution) ⊂ `admin` (adds /admin routes and other keys' jobs and batches). `current_caller` is
installed on the whole app (secure by default: a new router is protected without anyone remembering to), so routes
take `CallerDep` only to check scopes: FastAPI resolves it once per request, so the request is charged once.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from redis.asyncio import Redis

from gateway.audit import AuditLog
from gateway.errors import APIError
from gateway.rate_limit import RateLimiter
from ucai.api_keys import SCOPES, KeyRing, expand_scopes, load_keys
from ucai.constitutions import Constitution
from ucai.constitutions.schema import is_unethical
from ucai.settings import Settings

log = logging.getLogger("ucai.gateway")

# Open without a key (route templates): the probes (an orchestrator has no key) and the static page, which holds no
# data. /docs and /openapi.json are Starlette routes, outside the dependencies, and open too (schema only).
OPEN_PATHS = frozenset({"/health", "/ready", "/", "/static/{name}"})
# Prometheus scrapes without credentials by default: open too, unless UCAI_METRICS_REQUIRE_KEY (then any valid key).
METRICS_PATH = "/metrics"
_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer ucai-<id>-<secret>`.")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key, instead of the bearer header.")


def is_unethical_model(model: str) -> bool:
    return model.startswith("unethical")


def is_unethical_constitution(constitution: Constitution) -> bool:
    return is_unethical(constitution.name, constitution.inverse_of)


def estimated_tokens(texts: Iterable[str], max_tokens: Any, default_max_tokens: int) -> int:
    """What a chat request may cost before it runs (the tokens-per-minute charge): the completion it may write
    (`max_tokens`, else the role's default) plus its prompt at ≈ 4 characters a token."""
    completion = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else default_max_tokens
    return completion + sum(len(t) for t in texts) // 4


class KeySource:
    """The key ring, re-read when the keys file changes, so a key made with `ucai keys create` works without a
    restart. A configured file that is missing at start is an error (a typo must not turn auth off)."""

    def __init__(self, path: Path | None, env_keys: str | None):
        self.path, self.env_keys = path, env_keys
        self._stamp = self._stat()
        self.ring = load_keys(path, env_keys)

    def _stat(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat() if self.path else None
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size) if stat else None

    def current(self) -> KeyRing:
        stamp = self._stat()
        if stamp is not None and stamp != self._stamp:
            try:
                self.ring = load_keys(self.path, self.env_keys)
                self._stamp = stamp
            except (OSError, ValueError) as exc:  # keep the last good ring (fail closed, never open)
                log.error("API keys file %s not reloaded: %s", self.path, exc)
        return self.ring


class Access:
    """Everything the callers share, built once in the lifespan (app.state.access)."""

    def __init__(self, settings: Settings, redis: Redis):
        self.keys = KeySource(settings.api_keys_file, settings.api_keys)
        self.open_paths = OPEN_PATHS if settings.metrics_require_key else OPEN_PATHS | {METRICS_PATH}
        self.limiter = RateLimiter(redis, settings.rate_limit_rpm, settings.rate_limit_tpm)
        self.audit = AuditLog(settings.audit_log, settings.audit_prompt_text)


def _rate_limited(what: str, per_min: int, retry_after: int) -> APIError:
    return APIError(429, f"rate limit reached: {per_min} {what} per minute for this API key; retry in "
                    f"{retry_after}s", code="rate_limited", headers={"Retry-After": str(retry_after)})


@dataclass
class Caller:
    """Who is calling; key_id None when auth is off (then every scope is held and everything is visible)."""

    key_id: str | None
    scopes: frozenset[str]
    access: Access | None = None
    route: str = ""  # the request's path: the audit's default route

    @property
    def owner(self) -> str:
        """What jobs and batches record as their owner ("" when auth is off)."""
        return self.key_id or ""

    def _need(self, scope: str, what: str, param: str | None) -> None:
        if scope not in self.scopes:
            held = ", ".join(s for s in SCOPES if s in self.scopes) or "none"
            raise APIError(403, f"{what} needs the {scope!r} scope; this API key has: {held}", param=param,
                           code="insufficient_scope")

    def require(self, scope: str) -> None:
        """403 unless the caller holds `scope` (admin routes)."""
        self._need(scope, "this route", None)

    def can_use_model(self, model: str) -> bool:
        """Whether the model is usable with these scopes (GET /v1/models lists only those)."""
        return "research" in self.scopes or not is_unethical_model(model)

    async def use_model(self, model: str, prompt: str | None = None, route: str = "") -> None:
        """A chat model by its public name: 403 for an unethical one without `research`; audited when unethical."""
        if is_unethical_model(model):
            self._need("research", f"the model {model!r}", "model")
            self._audit(route, model=model, prompt=prompt)

    async def use_constitution(self, constitution: Constitution, prompt: str | None = None, route: str = "") -> None:
        """A constitution: 403 for an unethical one without `research`; audited when unethical."""
        if is_unethical_constitution(constitution):
            self._need("research", f"the constitution {constitution.name!r}", "constitution")
            self._audit(route, constitution=constitution.name, prompt=prompt)

    async def charge_tokens(self, tokens: int) -> None:
        """Charge estimated model tokens to the key's tokens-per-minute bucket; 429 + Retry-After when over."""
        if self.access is None or self.key_id is None:  # no keys, no limits: a gateway without keys is a local one
            return
        limiter = self.access.limiter
        retry_after = await limiter.take(self.key_id, "tokens", tokens)
        if retry_after:
            raise _rate_limited("tokens", limiter.limits["tokens"], retry_after)

    def owns(self, owner: str | None) -> bool:
        """Whether this caller may see a job or batch of `owner`: its own, or any with admin or auth off."""
        return "admin" in self.scopes or (self.key_id is not None and (owner or "") == self.key_id)

    def _audit(self, route: str, **fields: str | None) -> None:
        if self.access is not None:
            self.access.audit.write(self.access.audit.entry(self.key_id, route or self.route, **fields))


async def current_caller(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_header)],
) -> Caller:
    """Authenticate (401 `missing_api_key` / `invalid_api_key`) and charge one request to the key's bucket (429)."""
    access: Access = request.app.state.access
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    ring = access.keys.current()
    if path in access.open_paths:  # not charged either: probes and scrapes come every few seconds
        return Caller(None, expand_scopes(SCOPES) if not ring.enabled else frozenset(), access, request.url.path)
    if not ring.enabled:
        caller = Caller(None, expand_scopes(SCOPES), access, request.url.path)
    else:
        plaintext = bearer.credentials if bearer else api_key
        challenge = {"WWW-Authenticate": "Bearer"}
        if not plaintext:
            raise APIError(401, "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
                           code="missing_api_key", headers=challenge)
        key = ring.lookup(plaintext)
        if key is None:
            raise APIError(401, "invalid API key", code="invalid_api_key", headers=challenge)
        caller = Caller(key.id, key.granted, access, request.url.path)
    # Limits are per key: without keys (a local gateway, the test stacks) every caller would share one bucket, and a
    # batch's pollers would throttle each other.
    # A keyed scrape (UCAI_METRICS_REQUIRE_KEY) is not charged: it comes every few seconds, and must answer while
    # Redis is away.
    charged = caller.key_id and path != METRICS_PATH
    retry_after = await access.limiter.take(caller.key_id, "requests") if charged else 0
    if retry_after:
        raise _rate_limited("requests", access.limiter.limits["requests"], retry_after)
    return caller


CallerDep = Annotated[Caller, Depends(current_caller)]
