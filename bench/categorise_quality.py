"""How well the judge categorises red-team prompts by principle, on the bundled labelled prompts, and how fast.

    python bench/categorise_quality.py [--url http://127.0.0.1:8000] [--constitution ethical] [--quick]

Sends the bundled red-team prompts (ucai/datasets/redteam_prompts.jsonl: each labelled with its principle, or
`none`) as one categorise batch, as `ucai data categorise` and the experiment's categorise stage do, and compares
the judge's category with the label: accuracy against the chance of always answering the most common label, each
label's recall, and the confusion counts. The batch runs twice, the second time on a warm prefix cache: the first
run pays for the shared part of the prompt once, the second shows what is left. `ratio` is accuracy ÷ the
majority-label baseline (> 1: better than always guessing the commonest label). Writes
bench/results/categorise_quality.json.
"""
from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_stack_args, print_table, stack, write_results  # noqa: E402


def categorise(url: str, constitution: str, records: list[dict]) -> tuple[dict[str, str], float]:
    """{record id: the judge's category}, and the batch's wall time."""
    from ucai.datasets.generate import batch_body, run_batches

    body = {**batch_body("categorise", constitution, records, {}),
            "idempotency_key": f"bench-categorise-{uuid.uuid4()}"}  # a fresh batch: nothing served from a past run
    started = time.perf_counter()
    (_view, lines), = run_batches(url, [body], progress=False)
    wall = time.perf_counter() - started
    return {line["id"]: line["result"]["category"] for line in lines if line["status"] == "completed"}, wall


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stack_args(parser)
    parser.add_argument("--constitution", default="ethical", help="whose principles are the categories")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file (default bench/results/categorise_quality.json)")
    args = parser.parse_args(argv)

    from ucai.datasets import REDTEAM_PROMPTS
    from ucai.datasets.importers import import_file

    labelled = [r for r in import_file(REDTEAM_PROMPTS, "jsonl").records if r.category]
    if args.quick:
        labelled = labelled[::8]
    records = [{"id": r.id, "prompt": r.prompt} for r in labelled]
    truth = {r.id: r.category for r in labelled}
    with stack(args) as s:
        predicted, cold_s = categorise(s.url, args.constitution, records)
        _again, warm_s = categorise(s.url, args.constitution, records)
    counts, hits = Counter(truth.values()), Counter(t for i, t in truth.items() if predicted.get(i) == t)
    accuracy, majority = hits.total() / len(truth), counts.most_common(1)[0][1] / len(truth)
    guessed = Counter(predicted.values())
    rows = [{"label": label, "n": n, "recall": round(hits[label] / n, 3), "predicted": guessed[label]}
            for label, n in sorted(counts.items())]
    print_table(rows, ["label", "n", "recall", "predicted"],
                title=f"categorise under {args.constitution}: accuracy {accuracy:.3f} on n={len(truth)} "
                      f"(majority label {majority:.3f}); batch {cold_s:.1f}s cold, {warm_s:.1f}s warm")
    confusion = Counter(f"{truth[i]} -> {predicted.get(i, 'failed')}" for i in truth)
    payload = {"constitution": args.constitution, "n": len(truth), "accuracy": round(accuracy, 3),
               "majority_baseline": round(majority, 3), "failed": len(truth) - len(predicted),
               "cold_s": round(cold_s, 1), "warm_s": round(warm_s, 1), "labels": rows,
               "confusion": dict(sorted(confusion.items()))}
    write_results("categorise_quality", payload, accuracy / majority, args.out)
    return payload


if __name__ == "__main__":
    main()
