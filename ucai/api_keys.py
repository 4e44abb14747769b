"""API keys: who may call the gateway, and with which scopes. Light (no FastAPI): the CLI and `ucai up` use it too.

A key is `ucai-<key_id>-<secret>` (secret: 32 random bytes, URL-safe). Only its sha256 is stored — in a JSON keys
file `{"keys": [{"id", "sha256", "scopes", "created_at"}]}` (mode 0600) and/or the `UCAI_API_KEYS` setting — so a
leaked keys file lets nobody call the gateway. A high-entropy secret needs no slow hash (no dictionary to guess from).

Scopes are hierarchical: `admin` ⊇ `research` ⊇ `chat` (README: Access control). No keys configured → auth is off.
"""
from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse

from pydantic import BaseModel, Field, field_validator

SCOPES = ("chat", "research", "admin")  # each includes the ones before it
KEY_ID_PATTERN = r"^[A-Za-z0-9_.]{1,64}$"  # no "-": the id is readable back out of a key
DEV_KEY_ID = "dev"
KEYS_FILE_NAME = "api-keys.json"
DEV_KEY_FILE_NAME = "dev-api-key"
API_KEY_ENV = "UCAI_API_KEY"  # what clients (the CLI, scripts) send; not the gateway's setting


def expand_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """Every scope a key holds, implied ones included (research → research + chat)."""
    held: set[str] = set()
    for scope in scopes:
        held.update(SCOPES[: SCOPES.index(scope) + 1])
    return frozenset(held)


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


class ApiKey(BaseModel):
    """One stored key: never the key itself, only its sha256."""

    id: str = Field(pattern=KEY_ID_PATTERN, description="Names the caller in the audit log and owns its jobs.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 (hex) of the plaintext key.")
    scopes: list[str] = Field(min_length=1, description="chat | research | admin (each includes the ones before).")
    created_at: float | None = None

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, scopes: list[str]) -> list[str]:
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown:
            raise ValueError(f"unknown scope(s) {', '.join(unknown)}; scopes: {', '.join(SCOPES)}")
        return scopes

    @property
    def granted(self) -> frozenset[str]:
        return expand_scopes(self.scopes)


class KeysFile(BaseModel):
    keys: list[ApiKey] = Field(default_factory=list)


class KeyRing(BaseModel):
    """The keys the gateway accepts."""

    keys: list[ApiKey] = Field(default_factory=list)
    configured: bool = Field(False, description="A keys file or UCAI_API_KEYS was given (even with no keys left).")

    @property
    def enabled(self) -> bool:
        """False when no keys are configured: auth is off and every route is open (local use, the tests). A keys
        file whose last key was revoked keeps auth on: nobody gets in, rather than everybody."""
        return self.configured or bool(self.keys)

    def lookup(self, plaintext: str) -> ApiKey | None:
        """The key whose hash matches; every entry is compared in constant time, so timing says nothing."""
        digest = hash_key(plaintext)
        found = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.sha256):
                found = key
        return found


def read_keys_file(path: Path) -> KeysFile:
    if not path.is_file():
        return KeysFile()
    return KeysFile.model_validate_json(path.read_text() or "{}")


def _parse_env(value: str) -> list[ApiKey]:
    """`UCAI_API_KEYS`: a JSON list of the keys file's entries, or the compact `id:sha256:scope+scope,…`."""
    value = value.strip()
    if not value:
        return []
    if value.startswith("["):
        return [ApiKey.model_validate(entry) for entry in json.loads(value)]
    keys = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        key_id, digest, scopes = item.split(":")
        keys.append(ApiKey(id=key_id, sha256=digest, scopes=scopes.split("+")))
    return keys


def load_keys(path: Path | None, env_keys: str | None) -> KeyRing:
    """The keys file (when given) plus the env setting; an id in both: the env's entry wins. A keys file that is
    configured but missing is an error, not "auth off": a typo must not open the gateway."""
    keys: dict[str, ApiKey] = {}
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"API keys file {path} (UCAI_API_KEYS_FILE) does not exist; create a key with "
                                    f"`ucai keys create --file {path}`")
        keys.update({k.id: k for k in read_keys_file(Path(path)).keys})
    if env_keys:
        keys.update({k.id: k for k in _parse_env(env_keys)})
    return KeyRing(keys=list(keys.values()), configured=path is not None or bool(keys))


def _write_private(path: Path, text: str) -> None:
    """Write text to path with mode 0600, atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(tmp, 0o600)  # the umask may have narrowed it further; never wider
    os.replace(tmp, path)


def create_key(path: Path, key_id: str, scopes: Iterable[str]) -> str:
    """Add (or replace, same id) a key in the keys file; returns the plaintext key — shown once, stored nowhere."""
    path = Path(path)
    plaintext = f"ucai-{key_id}-{secrets.token_urlsafe(32)}"
    entry = ApiKey(id=key_id, sha256=hash_key(plaintext), scopes=list(scopes), created_at=time.time())
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:  # two `keys create` at once: neither is lost
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = read_keys_file(path)
        keys = [k for k in current.keys if k.id != key_id] + [entry]
        _write_private(path, KeysFile(keys=keys).model_dump_json(indent=2) + "\n")
    return plaintext


def revoke_key(path: Path, key_id: str) -> bool:
    """Remove a key from the keys file; False when there was none with that id."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = read_keys_file(path)
        keys = [k for k in current.keys if k.id != key_id]
        if len(keys) == len(current.keys):
            return False
        _write_private(path, KeysFile(keys=keys).model_dump_json(indent=2) + "\n")
    return True


def ensure_dev_key(state_dir: Path) -> tuple[Path, Path]:
    """For `ucai up`: a `dev` key with every scope in `<state_dir>/api-keys.json`, its plaintext in
    `<state_dir>/dev-api-key` (0600). Kept while the two still match; (re)created otherwise."""
    state_dir = Path(state_dir)
    keys_file, dev_file = state_dir / KEYS_FILE_NAME, state_dir / DEV_KEY_FILE_NAME
    stored = next((k for k in read_keys_file(keys_file).keys if k.id == DEV_KEY_ID), None)
    plaintext = dev_file.read_text().strip() if dev_file.is_file() else ""
    if stored is None or not plaintext or not hmac.compare_digest(hash_key(plaintext), stored.sha256):
        _write_private(dev_file, create_key(keys_file, DEV_KEY_ID, SCOPES) + "\n")
    return keys_file, dev_file


def client_key(url: str | None = None, state_dir: Path = Path(".ucai")) -> str | None:
    """The key a client on this machine sends to the gateway at `url`: `UCAI_API_KEY`, else the dev key `ucai up`
    wrote — the latter only to a gateway on this machine, so it never leaves for another host."""
    if os.environ.get(API_KEY_ENV):
        return os.environ[API_KEY_ENV]
    if url is not None and urlparse(url).hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    dev_file = Path(state_dir) / DEV_KEY_FILE_NAME
    return dev_file.read_text().strip() if dev_file.is_file() else None


def client_headers(url: str | None = None, state_dir: Path = Path(".ucai")) -> dict[str, str]:
    """Authorization header for the gateway at `url` (empty when there is no key: auth is off there)."""
    key = client_key(url, state_dir)
    return {"Authorization": f"Bearer {key}"} if key else {}
