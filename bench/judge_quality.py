"""Judge quality on the labelled set, every method side by side, under a constitution and under its inversion.

Runs `ucai judge-check`'s measurement for each (constitution, method) against a running gateway, prints one table
and writes JSON. A judge that follows its constitution has accuracy > 0.5 and a positive margin under `ethical`
(chosen = the ethical answer) and accuracy < 0.5, a negative margin, under `unethical`. For the contrastive judge
it also fits τ per constitution (log loss) and reports Brier before/after.

    python bench/judge_quality.py --url http://127.0.0.1:8000 [--methods logprob,contrast,contrast-norm,cot:1]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from pathlib import Path

from ucai.evaluation.judge_check import calibrate, inverts, load_pairs, run_judge_check, summarise

# A method name, or contrast-norm: the contrastive judge with per-token (length-normalised) scores.
VARIANTS = {"contrast-norm": {"method": "contrast", "length_normalised": True}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--data", type=Path, default=Path(__file__).parent / "data" / "judge_pairs.jsonl")
    parser.add_argument("--constitutions", nargs="+", default=["ethical", "unethical"])
    parser.add_argument("--methods", default="logprob,contrast,contrast-norm,option:1,cot:1",
                        help="comma-separated; METHOD:K sets that method's ensemble")
    parser.add_argument("--ensemble", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "judge_quality.json")
    args = parser.parse_args()

    pairs = load_pairs(args.data)
    rows = []
    for spec in args.methods.split(","):
        name, _, k = spec.partition(":")
        for constitution in args.constitutions:
            options = {"method": name, **VARIANTS.get(name, {}), "constitution": constitution,
                       "ensemble": int(k or args.ensemble)}
            started = time.perf_counter()
            outcomes = asyncio.run(run_judge_check(args.url, pairs, options, args.seed))
            row = {"method": name, "constitution": constitution, "ensemble": options["ensemble"],
                   **summarise(outcomes).model_dump(), "wall_s": round(time.perf_counter() - started, 1)}
            if options["method"] == "contrast":  # under the inverse constitution the right answer is `rejected`
                inverted = inverts(args.url, constitution, pairs[0][1].constitution)
                row["calibration"] = calibrate(outcomes, tau_before=1.0, inverted=inverted).model_dump()
            rows.append(row)
            print(f"{name:<14} {constitution:<10} acc {row['accuracy']:.3f} margin {row['mean_margin']:+.3f} "
                  f"({row['wall_s']:.0f}s)", flush=True)

    print(f"\n{len(pairs)} labelled pairs (chosen = the ethical answer)")
    print(f"{'method':<14} {'constitution':<12} {'k':>2} {'accuracy':>8} {'margin':>8} {'flips':>6} {'brier':>6} "
          f"{'s/cmp':>6} {'τ fit':>7} {'brier@τ':>7}")
    for r in rows:
        flips = "n/a" if r["position_flip_rate"] is None else f"{r['position_flip_rate']:.3f}"
        cal = r.get("calibration")
        print(f"{r['method']:<14} {r['constitution']:<12} {r['ensemble']:>2} {r['accuracy']:>8.3f} "
              f"{r['mean_margin']:>+8.3f} {flips:>6} {r['brier']:>6.3f} {r['seconds_per_compare']:>6.1f} "
              f"{cal['tau'] if cal else '':>7} {cal['brier_after'] if cal else '':>7}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.platform(), "data": str(args.data), "pairs": len(pairs),
                                    "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
