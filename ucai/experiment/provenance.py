"""What the report records about where its numbers came from: machine, commit, constitutions, datasets, recipes."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from ucai.experiment.state import file_sha256

ROOT = Path(__file__).resolve().parents[2]


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=ROOT)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def machine() -> dict[str, Any]:
    cpu, flags = platform.processor() or None, []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in (None, "", "x86_64"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = [f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "amx"))]
                break
    except OSError:
        pass
    memory_gib = None
    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {"cpu": cpu, "cpu_flags": flags, "cores": os.cpu_count(), "memory_gib": memory_gib,
            "platform": platform.platform(), "python": platform.python_version()}


def recipes(files: dict[str, Path]) -> dict[str, dict[str, str]]:
    return {stage: {"path": str(path), "sha256": file_sha256(path)} for stage, path in files.items()}


def dataset_manifest(path: Path) -> dict[str, Any] | None:
    """A generated dataset's manifest (`<name>.manifest.json` next to `<name>.jsonl`), without its bulk."""
    manifest = path.with_name(path.name.removesuffix(".jsonl") + ".manifest.json")
    if not manifest.is_file():
        return None
    data = json.loads(manifest.read_text())
    return {k: data.get(k) for k in ("stage", "constitution", "constitution_hash", "dataset", "params", "mode",
                                      "models", "records", "failed", "rows", "sha256", "batch_id")}
