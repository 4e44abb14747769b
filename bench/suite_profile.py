"""Where the test suite's time goes, per test and per file: wall time, the machine's idle share, the CPU time of each
kind of process (vLLM engines, pytest itself, workers, gateways, training runs, ...) and the engines' tokens (prompt,
from the prefix cache, generated) — the figures issue 15 (the suite's time on a 2-core AVX2 CPU) is steered by.

    python bench/suite_profile.py                      # the whole suite, one test at a time
    python bench/suite_profile.py -- tests/test_batches.py -k kill
    UCAI_VLLM_DTYPE=float32 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python bench/suite_profile.py
                                                       # the AVX2 path's dtype and ISA on a newer CPU (approximate)

Runs pytest with bench/suite_profile_plugin.py (OMP_NUM_THREADS=1, as `make test`, but in one stream: `make test`'s
two would charge each other's processes to their tests), prints the totals, the files and the slowest tests, and
writes bench/results/suite_profile.json (every test's row, and the machine). `--quick` profiles one fast test file
(no model), to check the tool itself. Compare two versions of the code side by side in one window (a worktree each),
not runs hours apart: whole-suite times drift with the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, ROOT, print_table, write_results  # noqa: E402

QUICK = ["tests/test_layout.py"]


def by_file(rows: list[dict]) -> list[dict]:
    files: dict[str, dict] = defaultdict(lambda: defaultdict(float))
    for row in rows:
        total = files[row["test"].split("::")[0]]
        total["tests"] += 1
        for key in ("wall_s", "busy_cpu_s", "idle_cpu_s"):
            total[key] += row[key]
        for kind, seconds in row["cpu_s"].items():
            total[f"cpu {kind}"] += seconds
        for name, value in row["engine"].items():
            total[name] += value
    return [{"file": name, **totals, "tests": int(totals["tests"])}
            for name, totals in sorted(files.items(), key=lambda kv: -kv[1]["wall_s"])]


def totals(rows: list[dict]) -> dict:
    cores = os.cpu_count() or 1
    wall = sum(r["wall_s"] for r in rows)
    cpu: dict[str, float] = defaultdict(float)
    engine: dict[str, float] = defaultdict(float)
    for row in rows:
        for kind, seconds in row["cpu_s"].items():
            cpu[kind] += seconds
        for name, value in row["engine"].items():
            engine[name] += value
    idle = sum(r["idle_cpu_s"] for r in rows)
    return {"tests": len(rows), "wall_s": round(wall, 1), "busy_cpu_s": round(sum(r["busy_cpu_s"] for r in rows), 1),
            "idle_share": round(idle / (cores * wall), 3) if wall else None,
            "cpu_s": {k: round(v, 1) for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])},
            "engine": {k: int(v) for k, v in engine.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"profile {' '.join(QUICK)} only (checks the tool)")
    parser.add_argument("--top", type=int, default=25, help="slowest tests to print")
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/suite_profile.json")
    parser.add_argument("pytest_args", nargs="*", help="after --: what pytest runs (default: the whole suite)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ucai-suite-profile-") as tmp:
        rows_file = Path(tmp) / "rows.json"
        # Its own basetemp: pytest prunes old numbered ones, which must never be a calling pytest's.
        selection = QUICK if args.quick else args.pytest_args
        command = [sys.executable, "-m", "pytest", "-p", "bench.suite_profile_plugin", "-q", "-p", "no:cacheprovider",
                   "--basetemp", str(Path(tmp) / "pytest"), *selection]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "UCAI_SUITE_PROFILE_OUT": str(rows_file),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        done = subprocess.run(command, cwd=ROOT, env=env)
        rows = json.loads(rows_file.read_text()) if rows_file.is_file() else []
    if not rows:
        print("no test ran", file=sys.stderr)
        return done.returncode or 1
    summary = totals(rows)
    print(json.dumps(summary, indent=2))
    files = by_file(rows)
    columns = ["file", "tests", "wall_s", "busy_cpu_s", "idle_cpu_s", "cpu vllm", "cpu pytest",
               "cpu children (exited)", "generation_tokens_total"]
    print_table(files, columns, title="per file, slowest first")
    slowest = sorted(rows, key=lambda r: -r["wall_s"])[:args.top]
    print_table([{**r, "cpu vllm": r["cpu_s"].get("vllm"), "generated": r["engine"].get("generation_tokens_total")}
                 for r in slowest], ["test", "wall_s", "busy_cpu_s", "idle_cpu_s", "cpu vllm", "generated"],
                title=f"slowest {len(slowest)} tests")
    write_results("suite_profile", {"pytest_exit": done.returncode, "pytest_args": selection, "totals": summary,
                                    "files": files, "tests": rows}, None, args.out or RESULTS / "suite_profile.json")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
