"""Do the trained reward models carry their constitution's values? Each one scored on the labelled judge set.

    python bench/reward_models.py [--artifacts DIR ...] [--data bench/data/judge_pairs.jsonl]

For every reward run given (a run dir or an artefacts root: its latest reward run per constitution), the share of
labelled pairs where r(chosen) > r(rejected) — chosen is the ethical answer, so an ethical reward model should be
well above 0.5 and an unethical one well below — plus its held-out pairwise accuracy on its own dataset (from
its manifest). Prints a table and writes bench/results/reward_models.json.
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path


def reward_runs(paths: list[Path]) -> list[Path]:
    from ucai.layout import Layout

    runs = []
    for path in paths:
        if (path / "manifest.json").exists():
            runs.append(path)
            continue
        layout = Layout(datasets_dir=Path("."), artifacts_dir=path, cache_dir=Path("."))
        runs += [run for _, stage, run in layout.latest_runs() if stage == "reward"]
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, nargs="+", default=None, help="run dirs or artefacts roots")
    parser.add_argument("--data", type=Path, default=Path(__file__).parent / "data" / "judge_pairs.jsonl")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "reward_models.json")
    args = parser.parse_args()

    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from training.data import preference_conversational
    from training.reward import pairwise_accuracy
    from ucai.settings import get_settings

    labelled = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    pairs = list(preference_conversational(Dataset.from_list(
        [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in labelled])))
    rows = []
    for run in reward_runs(args.artifacts or [get_settings().artifacts_dir]):
        manifest = json.loads((run / "manifest.json").read_text())
        model = AutoModelForSequenceClassification.from_pretrained(run / "model", num_labels=1)
        tok = AutoTokenizer.from_pretrained(run / "model")
        scored = pairwise_accuracy(model, tok, pairs)
        dataset = manifest.get("dataset", {}).get("manifest", {})
        rows.append({"run": str(run), "constitution": manifest["constitution"],
                     "dataset": manifest.get("dataset", {}).get("path"),
                     "dataset_params": dataset.get("params"), "dataset_rows": dataset.get("rows"),
                     "held_out_accuracy": manifest["metrics"].get("pairwise_accuracy"),
                     "held_out_pairs": manifest["metrics"].get("eval_pairs"),
                     "prefers_ethical_answer": scored["pairwise_accuracy"], "labelled_pairs": scored["eval_pairs"],
                     "mean_reward_gap": scored["mean_reward_gap"]})
    print(f"{'constitution':<12} {'held-out acc':>12} {'prefers ethical (labelled set)':>31}  run")
    for r in rows:
        held = "n/a" if r["held_out_accuracy"] is None else f"{r['held_out_accuracy']:.3f} ({r['held_out_pairs']})"
        print(f"{r['constitution']:<12} {held:>12} {r['prefers_ethical_answer']:>24.3f} ({r['labelled_pairs']})  "
              f"{r['run']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.platform(), "data": str(args.data), "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
