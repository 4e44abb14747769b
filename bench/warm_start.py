"""Training stages started cold (`python -m training STAGE …`: a new interpreter that imports torch, transformers,
PEFT and TRL) against warm (forked from training/warm_start.py's server, as `ucai experiment run` starts them): the
wall time of whole short stages, side by side in one run.

    python bench/warm_start.py [--steps 1] [--repeats 2] [--stages sft,reward,grpo] [--quick]

Each repeat runs every stage cold and warm, alternating which goes first, on bench/training.py's data (and
bench/checkpointing.py's preference pairs for the reward model), with `--threads` torch threads each (default 1: two
stages side by side on one core, as in the CI experiment in one stream of `make test`). The server's own import time
is reported once: in an experiment it overlaps the data stages. ratio = warm ÷ cold median wall time of SFT; each row
has its own. Writes bench/results/warm_start.json.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.checkpointing import make_preferences  # noqa: E402
from bench.common import ROOT, print_table, stage_list, write_results  # noqa: E402
from bench.training import make_data, make_reward_model, project_argv  # noqa: E402

STAGES = ("sft", "reward", "grpo")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1, help="optimizer steps per run (the CI experiment: 1)")
    parser.add_argument("--repeats", type=int, default=2, help="cold and warm runs of each stage")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"any of {', '.join(STAGES)}")
    parser.add_argument("--rows", type=int, default=16, help="dataset rows")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run")
    parser.add_argument("--logs", type=Path, default=ROOT / ".ucai" / "logs" / "bench")
    parser.add_argument("--quick", action="store_true", help="a smoke run: SFT once each way")
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/warm_start.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.stages = 1, "sft"
    stages = stage_list(parser, args.stages, STAGES)
    from training.warm_start import WarmStarter

    args.logs.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ucai-bench-warm-start-") as tmp:
        workdir = Path(tmp)
        data = make_data(workdir, args.rows)
        datasets = {"sft": data["sft"], "reward": make_preferences(workdir / "preferences.jsonl", args.rows),
                    "grpo": data["prompts"]}
        if "grpo" in stages:
            make_reward_model(data["reward"])
        env = {**os.environ, "UCAI_ARTIFACTS": str(workdir / "artifacts"), "UCAI_CHAT_ADAPTERS": "none",
               "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
        started = time.monotonic()
        server = WarmStarter(env, args.logs / "warm-start-server.log")
        ready = server.ready()
        server_s = time.monotonic() - started
        print(f"server ready in {server_s:.1f} s (imports {ready.preload_s:.1f} s)", flush=True)
        try:
            for stage in stages:
                times: dict[str, list[float]] = {"cold": [], "warm": []}
                for repeat in range(args.repeats):
                    for side in ("cold", "warm") if repeat % 2 == 0 else ("warm", "cold"):
                        run = [stage, *project_argv(stage, datasets[stage], data["reward"], args.steps),
                               "--run_id", f"{side}-{repeat}"]
                        log = args.logs / f"warm-start-{stage}-{side}-{repeat}.log"
                        t0 = time.monotonic()
                        if side == "cold":
                            with log.open("w") as out:
                                code = subprocess.run([sys.executable, "-m", "training", *run], env=env, cwd=ROOT,
                                                      stdout=out, stderr=subprocess.STDOUT).returncode
                        else:
                            log.write_text("")
                            code = server.run(run, env, log, cwd=ROOT)
                        if code != 0:
                            raise RuntimeError(f"{stage} {side} failed (exit {code}); see {log}")
                        times[side].append(time.monotonic() - t0)
                        print(f"  {stage} {side}: {times[side][-1]:.1f} s", flush=True)
                cold, warm = statistics.median(times["cold"]), statistics.median(times["warm"])
                rows.append({"stage": stage, "steps": args.steps, "runs": args.repeats, "cold_s": round(cold, 2),
                             "warm_s": round(warm, 2), "ratio": round(warm / cold, 3)})
        finally:
            server.close()
    print_table(rows, ["stage", "steps", "runs", "cold_s", "warm_s", "ratio"],
                title=f"training stages cold vs forked warm (median wall s; server imports {ready.preload_s:.1f} s "
                      f"once)")
    payload = {"rows": rows, "server_ready_s": round(server_s, 2), "server_imports_s": ready.preload_s,
               "threads": args.threads, "recipe": "smollm2-135m"}
    write_results("warm_start", payload, rows[0]["ratio"], out=args.out)
    return payload


if __name__ == "__main__":
    main()
