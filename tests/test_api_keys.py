"""API keys at rest (ucai/api_keys.py) and the `ucai keys` commands: hashed, 0600, scopes, dev key, env format."""
from __future__ import annotations

import json
import stat

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from ucai.api_keys import (
    KeyRing,
    client_headers,
    create_key,
    ensure_dev_key,
    expand_scopes,
    hash_key,
    load_keys,
    read_keys_file,
    revoke_key,
)
from ucai.cli import app


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_create_key_stores_only_the_hash_in_a_private_file(tmp_path):
    path = tmp_path / "state" / "keys.json"
    key = create_key(path, "alice", ["chat"])
    assert key.startswith("ucai-alice-") and len(key) > 40
    text = path.read_text()
    assert key not in text and key.split("-", 2)[2] not in text  # neither the key nor its secret
    entry = json.loads(text)["keys"][0]
    assert entry["id"] == "alice" and entry["sha256"] == hash_key(key) and entry["scopes"] == ["chat"]
    assert entry["created_at"] > 0
    assert mode(path) == 0o600


def test_same_id_replaces_other_ids_accumulate(tmp_path):
    path = tmp_path / "keys.json"
    old = create_key(path, "alice", ["chat"])
    bob = create_key(path, "bob", ["research"])
    new = create_key(path, "alice", ["admin"])
    ring = load_keys(path, None)
    assert sorted(k.id for k in ring.keys) == ["alice", "bob"]
    assert ring.lookup(old) is None  # replaced: the old key no longer works
    assert ring.lookup(new).scopes == ["admin"] and ring.lookup(bob).id == "bob"
    assert ring.lookup("ucai-alice-guess") is None and ring.lookup("") is None


def test_scopes_are_hierarchical_and_checked():
    assert expand_scopes(["chat"]) == {"chat"}
    assert expand_scopes(["research"]) == {"chat", "research"}
    assert expand_scopes(["admin"]) == {"chat", "research", "admin"}
    with pytest.raises(ValidationError, match="unknown scope"):
        KeyRing.model_validate({"keys": [{"id": "x", "sha256": "0" * 64, "scopes": ["root"]}]})


def test_bad_ids_and_scopes_are_refused_before_writing(tmp_path):
    path = tmp_path / "keys.json"
    with pytest.raises(ValidationError):
        create_key(path, "has-dash", ["chat"])  # the id is read back out of `ucai-<id>-<secret>`
    with pytest.raises(ValidationError):
        create_key(path, "ok", ["superuser"])
    assert read_keys_file(path).keys == []


def test_auth_is_off_only_without_any_configuration(tmp_path):
    assert not load_keys(None, None).enabled
    assert not load_keys(None, "").enabled
    with pytest.raises(FileNotFoundError):  # a configured file that is missing must not open the gateway
        load_keys(tmp_path / "typo.json", None)
    path = tmp_path / "keys.json"
    key = create_key(path, "only", ["chat"])
    assert revoke_key(path, "only") and not revoke_key(path, "only")
    ring = load_keys(path, None)
    assert ring.enabled and ring.lookup(key) is None  # last key revoked: nobody gets in, not everybody


def test_env_keys_json_and_compact_forms(tmp_path):
    a, b = "ucai-a-secret1", "ucai-b-secret2"
    as_json = json.dumps([{"id": "a", "sha256": hash_key(a), "scopes": ["research"]}])
    assert load_keys(None, as_json).lookup(a).scopes == ["research"]
    compact = f"a:{hash_key(a)}:chat, b:{hash_key(b)}:chat+admin"
    ring = load_keys(None, compact)
    assert ring.enabled and ring.lookup(a).id == "a" and ring.lookup(b).granted == {"chat", "research", "admin"}
    path = tmp_path / "keys.json"
    file_key = create_key(path, "a", ["chat"])
    merged = load_keys(path, as_json)  # the same id in both: the env's entry wins
    assert merged.lookup(a).scopes == ["research"] and merged.lookup(file_key) is None


def test_ensure_dev_key_creates_once_and_recovers_a_lost_plaintext(tmp_path):
    other = create_key(tmp_path / "api-keys.json", "ci", ["chat"])
    keys_file, dev_file = ensure_dev_key(tmp_path)
    assert keys_file == tmp_path / "api-keys.json" and dev_file == tmp_path / "dev-api-key"
    first = dev_file.read_text().strip()
    assert mode(dev_file) == 0o600 and mode(keys_file) == 0o600
    ring = load_keys(keys_file, None)
    assert ring.lookup(first).id == "dev" and ring.lookup(first).granted == {"chat", "research", "admin"}
    assert ring.lookup(other).id == "ci"  # other keys are kept
    ensure_dev_key(tmp_path)
    assert dev_file.read_text().strip() == first  # unchanged while the two match
    dev_file.unlink()
    ensure_dev_key(tmp_path)
    second = dev_file.read_text().strip()
    assert second != first and load_keys(keys_file, None).lookup(second).id == "dev"
    assert load_keys(keys_file, None).lookup(first) is None


def test_client_headers_from_env_or_dev_key(tmp_path, monkeypatch):
    monkeypatch.delenv("UCAI_API_KEY", raising=False)
    assert client_headers(None, tmp_path) == {}
    _, dev_file = ensure_dev_key(tmp_path)
    dev = {"Authorization": f"Bearer {dev_file.read_text().strip()}"}
    assert client_headers("http://127.0.0.1:8000", tmp_path) == client_headers(None, tmp_path) == dev
    assert client_headers("https://gateway.example.org", tmp_path) == {}  # the dev key stays on this machine
    monkeypatch.setenv("UCAI_API_KEY", "ucai-x-y")
    assert client_headers("https://gateway.example.org", tmp_path) == {"Authorization": "Bearer ucai-x-y"}


def test_cli_create_list_revoke_never_print_keys_in_list(tmp_path):
    path = tmp_path / "keys.json"
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "--id", "lab", "--scopes", "chat,research", "--file", str(path)])
    assert created.exit_code == 0, created.output
    key = next(line for line in created.stdout.splitlines() if line.startswith("ucai-lab-"))
    assert load_keys(path, None).lookup(key).scopes == ["chat", "research"]
    listed = runner.invoke(app, ["keys", "list", "--file", str(path)])
    assert listed.exit_code == 0 and listed.stdout.strip() == "lab\tchat,research"
    assert key not in listed.stdout and hash_key(key) not in listed.stdout
    bad = runner.invoke(app, ["keys", "create", "--id", "x", "--scopes", "root", "--file", str(path)])
    assert bad.exit_code == 2
    assert runner.invoke(app, ["keys", "revoke", "--id", "lab", "--file", str(path)]).exit_code == 0
    assert runner.invoke(app, ["keys", "list", "--file", str(path)]).stdout.strip() == ""
