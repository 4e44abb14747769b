"""Where everything lives on disk: the one module that knows the folder layout, rooted in `Settings`.

    <UCAI_DATASETS_DIR>/imports/<name>.jsonl                      imported prompts (`ucai data import`)
    <UCAI_DATASETS_DIR>/<kind>/<constitution>/<name>.<ext>        generated datasets: sft, prefs, prefs-revision
    <UCAI_DATASETS_DIR>/<kind>/<constitution>/<name>.manifest.json
    <UCAI_ARTIFACTS>/<constitution>/<stage>/<run-id>/             a training run (manifest, metrics, adapter/ …)
    <UCAI_ARTIFACTS>/<constitution>/<stage>/latest, latest.txt    the newest finished run of (constitution, stage)
    <UCAI_ARTIFACTS>/reports/                                     evaluation reports
    <UCAI_ARTIFACTS>/calibration/contrast_tau.json                the contrastive judge's fitted τ
    <UCAI_CACHE_DIR>/models/SmolLM2-135M-Instruct/                the prepared bundled model
    <UCAI_CACHE_DIR>/redis/                                       the local stack's own Redis (AOF)

Light on purpose (no torch): the gateway, the CLI and the serving side import it.
"""
from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ucai.settings import Settings, get_settings

DatasetKind = Literal["sft", "prefs", "prefs-revision"]
BUNDLED_MODEL_NAME = "SmolLM2-135M-Instruct"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_name(name: str, what: str = "name") -> str:
    """A dataset / constitution / stage name that is safe as one path component."""
    if not _NAME.match(name) or ".." in name:
        raise ValueError(f"{what} {name!r}: letters, digits, '_', '-', '.' only")
    return name


@dataclass(frozen=True)
class Layout:
    datasets_dir: Path
    artifacts_dir: Path
    cache_dir: Path

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Layout:
        settings = settings or get_settings()
        return cls(settings.datasets_dir, settings.artifacts_dir, settings.cache_dir)

    # --- datasets ---
    def imported(self, name: str) -> Path:
        return self.datasets_dir / "imports" / f"{check_name(name, 'dataset')}.jsonl"

    def dataset_dir(self, kind: DatasetKind, constitution: str) -> Path:
        return self.datasets_dir / kind / check_name(constitution, "constitution")

    def dataset(self, kind: DatasetKind, constitution: str, name: str, suffix: str = ".jsonl") -> Path:
        return self.dataset_dir(kind, constitution) / f"{check_name(name, 'dataset')}{suffix}"

    def dataset_manifest(self, kind: DatasetKind, constitution: str, name: str) -> Path:
        return self.dataset(kind, constitution, name, ".manifest.json")

    # --- training runs ---
    def stage_dir(self, constitution: str, stage: str) -> Path:
        return self.artifacts_dir / check_name(constitution, "constitution") / check_name(stage, "stage")

    def new_run_dir(self, constitution: str, stage: str, run_id: str | None = None) -> Path:
        run_id = run_id or time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
        run_dir = self.stage_dir(constitution, stage) / check_name(run_id, "run id")
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir

    def scratch_dir(self) -> Path:
        """Trainer output_dir before a run dir exists (TRL configs need one at construction)."""
        return self.artifacts_dir / "_tmp"

    def set_latest(self, run_dir: Path) -> None:
        """`latest` symlink next to the runs, and `latest.txt` with the run id (for filesystems without links)."""
        stage_dir = run_dir.parent
        (stage_dir / "latest.txt").write_text(run_dir.name + "\n")
        link = stage_dir / "latest"
        tmp = stage_dir / f".latest-{uuid.uuid4().hex[:6]}"
        try:
            tmp.symlink_to(run_dir.name, target_is_directory=True)
            os.replace(tmp, link)
        except OSError:
            tmp.unlink(missing_ok=True)

    def latest_run(self, constitution: str, stage: str) -> Path | None:
        """The latest run dir of (constitution, stage), or None."""
        stage_dir = self.stage_dir(constitution, stage)
        pointer = stage_dir / "latest.txt"
        if pointer.exists():
            run = stage_dir / pointer.read_text().strip()
            if run.exists():
                return run
        link = stage_dir / "latest"
        return link.resolve() if link.exists() else None

    def latest_runs(self) -> list[tuple[str, str, Path]]:
        """(constitution, stage, run dir) of every (constitution, stage) that has a finished run."""
        if not self.artifacts_dir.is_dir():
            return []
        found = []
        for constitution in sorted(p.name for p in self.artifacts_dir.iterdir()
                                   if p.is_dir() and not p.name.startswith(("_", "."))
                                   and p.name not in ("reports", "calibration")):
            for stage in sorted(p.name for p in (self.artifacts_dir / constitution).iterdir() if p.is_dir()):
                run = self.latest_run(constitution, stage)
                if run is not None:
                    found.append((constitution, stage, run))
        return found

    def serving_adapter(self, constitution: str, stage: str) -> Path:
        """The LoRA to serve for (constitution, stage): the run's `serving_adapter/` (RL stages: SFT and RL folded
        into one LoRA on the plain base model) where present, else its `adapter/`."""
        run = self.latest_run(constitution, stage)
        if run is None:
            raise FileNotFoundError(f"no {stage} run for constitution {constitution!r} under {self.artifacts_dir} "
                                    f"(train it with `ucai train {stage} --constitution {constitution}`)")
        for sub in ("serving_adapter", "adapter"):
            if (run / sub / "adapter_config.json").exists():
                return run / sub
        raise FileNotFoundError(f"{run} has no LoRA adapter to serve (a reward model is not served)")

    # --- reports, calibration and caches ---
    def reports_dir(self) -> Path:
        return self.artifacts_dir / "reports"

    def latest_report(self) -> Path | None:
        """The newest `<reports_dir>/<experiment>/report.html`, or None."""
        reports = sorted(self.reports_dir().glob("*/report.html"), key=lambda p: p.stat().st_mtime)
        return reports[-1] if reports else None

    def calibration_dir(self) -> Path:
        """Fitted judge parameters (the contrastive judge's τ per judge model and constitution)."""
        return self.artifacts_dir / "calibration"

    def bundled_model_dir(self) -> Path:
        return self.cache_dir / "models" / BUNDLED_MODEL_NAME

    def redis_dir(self) -> Path:
        return self.cache_dir / "redis"
