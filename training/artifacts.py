"""What a run dir holds besides the model: manifest.json, metrics.jsonl, the loss plot (the dir: `ucai.layout`)."""
from __future__ import annotations

import json
import math
import resource
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ucai.experiment.provenance import git_commit


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsCallback(TrainerCallback):
    """Appends every logged dict (with step and time) to metrics.jsonl."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "metrics.jsonl"
        self.t0 = time.time()
        self.records: list[dict[str, Any]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        rec = {"step": state.global_step, "elapsed_s": round(time.time() - self.t0, 3),
               **{k: _clean(v) for k, v in logs.items() if isinstance(v, int | float | str)}}
        self.records.append(rec)
        with self.path.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


PLOT_KEYS = ("loss", "eval_loss", "objective/rlhf_reward", "objective/scores", "objective/kl", "objective/entropy",
             "loss/policy_avg", "rewards/margins", "eval_accuracy", "reward", "kl", "entropy")


def plot_curves(run_dir: Path, keys: tuple[str, ...] = PLOT_KEYS) -> Path | None:
    """training_curves.png next to the artefact: one panel per logged metric present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(run_dir)
    series = {k: [(r["step"], r[k]) for r in records if isinstance(r.get(k), int | float)] for k in keys}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    fig, axes = plt.subplots(len(series), 1, figsize=(6, 2.4 * len(series)), squeeze=False)
    for ax, (k, pts) in zip(axes[:, 0], series.items(), strict=True):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3)
        ax.set_title(k)
        ax.set_xlabel("step")
    fig.tight_layout()
    out = run_dir / "training_curves.png"
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def write_manifest(run_dir: Path, *, stage: str, constitution: str, base_model: str, dataset: dict[str, Any],
                   recipe: str | None, config: dict[str, Any], metrics: dict[str, Any], wall_time_s: float,
                   outputs: dict[str, str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    import peft
    import torch
    import transformers
    import trl

    manifest = {
        "stage": stage, "constitution": constitution, "run_id": run_dir.name, "base_model": base_model,
        "dataset": dataset, "recipe": recipe, "config": config, "git_commit": git_commit(),
        "metrics": {k: _clean(v) for k, v in metrics.items()}, "wall_time_s": round(wall_time_s, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1), "outputs": outputs, "created_at": time.time(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
                     "peft": peft.__version__},
        **(extra or {}),
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    return manifest
