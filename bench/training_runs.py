"""Seconds per step, peak memory and the headline metric of the latest run of every (constitution, stage).

    python bench/training_runs.py [--artifacts artifacts]      (after `make train-cpu` or any `ucai train` runs)

Reads each run's manifest.json (written by the stage itself); prints a table and writes JSON to bench/results/.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

STAGES = ("sft", "reward", "ppo", "rloo", "grpo", "dpo")
HEADLINE = {"sft": ("last_loss", "loss"), "reward": ("pairwise_accuracy", "held-out acc"),
            "ppo": ("last_score", "score"), "rloo": ("last_reward", "reward"), "grpo": ("last_reward", "reward"),
            "dpo": ("last_loss", "loss")}


def latest_run(root: Path, constitution: str, stage: str) -> Path | None:
    pointer = root / constitution / stage / "latest.txt"
    return root / constitution / stage / pointer.read_text().strip() if pointer.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, default=Path(os.environ.get("UCAI_ARTIFACTS", "artifacts")))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "training_runs.json")
    args = parser.parse_args()

    rows = []
    for constitution in sorted(p.name for p in args.artifacts.iterdir() if p.is_dir() and not p.name.startswith("_")):
        for stage in STAGES:
            run = latest_run(args.artifacts, constitution, stage)
            if run is None or not (run / "manifest.json").exists():
                continue
            m = json.loads((run / "manifest.json").read_text())
            key, label = HEADLINE[stage]
            metrics = m.get("metrics", {})
            rows.append({"constitution": constitution, "stage": stage, "run_id": m["run_id"],
                         "steps": metrics.get("global_step"), "seconds_per_step": metrics.get("seconds_per_step"),
                         "wall_s": m.get("wall_time_s"), "peak_rss_mb": m.get("peak_rss_mb"),
                         "metric": label, "value": metrics.get(key), "dataset_rows": m.get("dataset", {}).get(
                             "manifest", {}).get("rows")})
    print(f"{'constitution':<12} {'stage':<7} {'rows':>5} {'steps':>5} {'s/step':>7} {'wall s':>7} "
          f"{'peak MB':>8}  metric")
    for r in rows:
        value = f"{r['value']:.3f}" if isinstance(r["value"], int | float) else str(r["value"])
        print(f"{r['constitution']:<12} {r['stage']:<7} {str(r['dataset_rows'] or ''):>5} {r['steps'] or 0:>5} "
              f"{r['seconds_per_step'] or 0:>7.2f} {r['wall_s'] or 0:>7.1f} {r['peak_rss_mb'] or 0:>8.0f}  "
              f"{r['metric']} {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
