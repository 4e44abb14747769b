"""Seconds per step, peak memory and the headline metric of the latest run of every (constitution, stage).

    python bench/training_runs.py [--artifacts artifacts]      (after `make train-cpu` or any `ucai train` runs)

Reads each run's manifest.json (written by the stage itself); prints a table and writes JSON to bench/results/.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
from pathlib import Path

from training.stages import STAGES
from ucai.layout import Layout


def main() -> None:
    layout = Layout.from_settings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, default=layout.artifacts_dir,
                        help="Training runs folder (default: UCAI_ARTIFACTS).")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "training_runs.json")
    args = parser.parse_args()
    layout = dataclasses.replace(layout, artifacts_dir=args.artifacts)

    order = list(STAGES)
    runs = [(c, s, r) for c, s, r in layout.latest_runs() if s in STAGES and (r / "manifest.json").exists()]
    rows = []
    for constitution, stage, run in sorted(runs, key=lambda r: (r[0], order.index(r[1]))):
        m = json.loads((run / "manifest.json").read_text())
        key, label = STAGES[stage].headline
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
