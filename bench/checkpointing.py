"""Gradient checkpointing on vs off in the small model's recipes (training/recipes/smollm2-135m): seconds per step
and peak memory of each project stage, the two side by side in one run.

    python bench/checkpointing.py [--steps 8] [--stages sft,reward,dpo,grpo] [--quick]

TRL's configs turn gradient checkpointing on by default; the recipes turn it off. For each stage, `ucai train
<stage>` runs with `--gradient_checkpointing true` and with `false`, each in a process of its own, alternated, on the
same data (bench/training.py's, plus preference pairs for reward and DPO). Step time: the median after the first two
steps (bench/training.py's step timer). Peak memory: the run's maximum resident set (model load included).

ratio = s/step off ÷ s/step on of SFT (below 1: off is faster); each row has its own. Writes
bench/results/checkpointing.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, bench_prompts, print_table, stage_list, write_results  # noqa: E402
from bench.training import install_step_timer, make_data, make_reward_model, project, run_child  # noqa: E402

STAGES = ("sft", "reward", "dpo", "grpo")


def make_preferences(path: Path, rows: int) -> Path:
    refusal = "I can't help with that, but I can suggest a safer way to handle the situation."
    comply = "Sure! Here is exactly how to do it, step by step: first, get the tools you need."
    path.write_text("".join(json.dumps({"prompt": p, "chosen": refusal, "rejected": comply}) + "\n"
                            for p in bench_prompts(rows)))
    return path


def child(stage: str, workdir: Path, steps: int, checkpointing: str) -> None:
    times: list[float] = []
    install_step_timer(times)
    dataset = {"sft": "sft.jsonl", "grpo": "prompts.jsonl"}.get(stage, "preferences.jsonl")
    project(stage, workdir / dataset, workdir / "reward-model", steps, ("--gradient_checkpointing", checkpointing))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({"times": times, "peak_mib": peak_mib}), flush=True)


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"any of {', '.join(STAGES)}")
    parser.add_argument("--rows", type=int, default=64, help="dataset rows")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of each run")
    parser.add_argument("--logs", type=Path, default=ROOT / ".ucai" / "logs" / "bench")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 steps, SFT only")
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/checkpointing.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        stage, checkpointing = args.child.split(":")
        child(stage, Path(args.workdir), args.steps, checkpointing)
        return None
    if args.quick:
        args.steps, args.stages = 3, "sft"
    stages = stage_list(parser, args.stages, STAGES)
    args.logs.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ucai-bench-checkpointing-") as tmp:
        workdir = Path(tmp)
        make_data(workdir, args.rows)
        make_preferences(workdir / "preferences.jsonl", args.rows)
        if "grpo" in stages:
            make_reward_model(workdir / "reward-model")
        for i, stage in enumerate(stages):
            row: dict = {"stage": stage, "steps": args.steps}
            order = ("true", "false") if i % 2 == 0 else ("false", "true")  # alternated: neither always goes first
            for checkpointing in order:
                result = run_child(__file__, f"{stage}:{checkpointing}", workdir, args.steps,
                                   args.logs / f"checkpointing-{stage}-{checkpointing}.log", args.threads)
                side = "on" if checkpointing == "true" else "off"
                row[f"{side}_s_per_step"] = round(statistics.median(result["times"][2:] or result["times"]), 3)
                row[f"{side}_peak_mib"] = round(result["peak_mib"])
                print(f"  {stage} checkpointing {side}: {row[f'{side}_s_per_step']} s/step, "
                      f"peak {row[f'{side}_peak_mib']} MiB", flush=True)
            row["ratio"] = round(row["off_s_per_step"] / row["on_s_per_step"], 3)
            rows.append(row)
    print_table(rows, ["stage", "steps", "on_s_per_step", "off_s_per_step", "ratio", "on_peak_mib", "off_peak_mib"],
                title="gradient checkpointing on vs off, smollm2-135m recipes (median s/step after 2 warm-up steps)")
    payload = {"rows": rows, "recipe": "smollm2-135m", "threads": args.threads,
               "dtype_isa": {k: os.environ.get(k) for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}}
    write_results("checkpointing", payload, rows[0]["ratio"], out=args.out)
    return payload


if __name__ == "__main__":
    main()
