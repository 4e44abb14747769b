"""The issue-14 benchmarks stay runnable: each imports and answers --help (no model), and `gateway --quick` runs for
real against the fast test server (own redis-server, worker and gateway subprocesses, a load driver process)."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench import common

ROOT = Path(__file__).resolve().parents[1]
BENCHES = ("pipeline", "naive", "gateway", "training", "memory", "latency")
BENCHES_IN_MAKE_ORDER = ("gateway", "latency", "pipeline", "naive", "memory", "training")
SCRIPTS = (*BENCHES, "gpu_pipeline", "gpu_training", "suite_profile", "checkpointing", "warm_start",
           "categorise_quality")


@pytest.mark.parametrize("name", SCRIPTS)
def test_bench_imports_and_answers_help(name, capsys):
    module = importlib.import_module(f"bench.{name}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "--quick" in out


@pytest.mark.parametrize("name", SCRIPTS)
def test_bench_runs_as_a_script(name):
    """`python bench/<name>.py` (what `make bench` runs) finds the repository's packages from any directory."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / f"{name}.py"), "--help"], cwd="/",
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout


def test_makefile_bench_target_runs_every_benchmark():
    done = subprocess.run(["make", "-n", "bench", "VENV=.venv"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    loop = next(line for line in done.stdout.splitlines() if "bench/$b.py" in line)
    assert loop.split("for b in ", 1)[1].split(";", 1)[0].split() == list(BENCHES_IN_MAKE_ORDER)
    one = subprocess.run(["make", "-n", "bench", "BENCH=pipeline"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert "for b in pipeline;" in one.stdout and "bench/common.py pipeline" in one.stdout  # then the summary


def test_summary_lists_every_benchmark_with_its_ratio(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    (tmp_path / "pipeline.json").write_text(json.dumps({"ratio": 0.93, "machine": {"date": "2026-11-28"}}))
    text = common.summary()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines()[2:]}
    assert set(rows) == set(BENCHES)
    assert "| 0.93 |" in rows["pipeline"] and "not run" in rows["naive"]


def test_percentile_and_table():
    assert common.percentile([], 50) is None
    assert common.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert common.percentile([5.0, 1.0], 100) == 5.0
    text = common.print_table([{"a": "x", "b": 1.23456}, {"a": "longer", "b": 12.0}], ["a", "b"])
    assert text.splitlines()[0].split() == ["a", "b"] and "1.23" in text and "12.0" in text


@pytest.mark.contract
def test_gateway_quick_against_the_test_server(tmp_path):
    out = tmp_path / "gateway.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gateway.py"), "--quick", "--url", "",
                           "--logs", str(tmp_path / "logs"), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**common.os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["benchmark"] == "gateway" and result["ratio"] > 0
    paths = {row["path"]: row for row in result["latency"]}
    assert paths["direct"]["n"] == 20 and paths["wait"]["p50_ms"] > paths["direct"]["p50_ms"] > 0
    assert [row["concurrency"] for row in result["enqueue"]] == [1, 16]
    assert all(row["accepted"] > 0 and row["refused"] == 0 for row in result["enqueue"])
    assert result["machine"]["cores"] and "latency, one request at a time" in done.stdout


def test_suite_profile_counts_each_tests_processes(tmp_path):
    """bench/suite_profile.py on two real tests: the one that runs a script in a subprocess is charged that
    process's CPU (as pytest's exited children); the in-process ones are not."""
    out, script = tmp_path / "profile.json", "tests/test_bench_scripts.py::test_bench_runs_as_a_script[naive]"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "suite_profile.py"), "--out", str(out), "--", script,
                           "tests/test_layout.py"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    rows = {row["test"]: row for row in result["tests"]}
    assert result["totals"]["tests"] == len(rows) == 9 and "per file, slowest first" in done.stdout
    assert rows[script]["cpu_s"]["children (exited)"] > 0.1  # `python bench/naive.py --help`: imports, at least
    layout = [row for test, row in rows.items() if test.startswith("tests/test_layout.py")]
    assert len(layout) == 8 and all("children (exited)" not in row["cpu_s"] for row in layout)
    assert all(row["wall_s"] > 0 and row["busy_cpu_s"] >= 0 for row in rows.values())


PROCESS_ACROSS_TESTS = '''
import subprocess, sys, time
LIVE = {}
def test_start():
    LIVE["p"] = subprocess.Popen([sys.executable, "-c", "import time\\nt = time.process_time()\\n"
                                  "while time.process_time() - t < 1.0: pass\\ntime.sleep(120)"])
    time.sleep(2.0)
def test_stop():
    LIVE["p"].kill()
    LIVE["p"].wait()
'''


def test_suite_profile_charges_a_process_to_the_tests_it_ran_in(tmp_path):
    """A process started in one test and reaped in the next: its CPU second is the first test's, not the second's
    (pytest's children times bring its whole life's CPU when it is reaped)."""
    (tmp_path / "test_across.py").write_text(PROCESS_ACROSS_TESTS)
    out = tmp_path / "profile.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "suite_profile.py"), "--out", str(out), "--",
                           str(tmp_path / "test_across.py")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = {row["test"].split("::")[1]: row["cpu_s"] for row in json.loads(out.read_text())["tests"]}
    assert rows["test_start"].get("other", 0) > 0.8
    assert rows["test_stop"].get("children (exited)", 0) < 0.3, rows


STRANGER_ENDS = '''
import os, signal, subprocess, sys
def test_a_stranger_ends_while_a_child_works():
    os.kill(int(os.environ["STRANGER_PID"]), signal.SIGKILL)
    subprocess.run([sys.executable, "-c", "import time\\nt = time.process_time()\\n"
                    "while time.process_time() - t < 0.5: pass"], check=True)
'''


def test_suite_profile_charges_only_its_own_children(tmp_path):
    """A process that is not the profiled pytest's (the other stream's, in `make test`) and ends during a test: its
    CPU second never reached this pytest's children times, so it must not offset the half second the test's own
    subprocess used (it did: the profile then showed no children CPU at all for that test)."""
    import psutil  # vLLM's own dependency

    stranger = subprocess.Popen([sys.executable, "-c", "import time\nt = time.process_time()\n"
                                 "while time.process_time() - t < 1.0: pass\ntime.sleep(300)"])
    try:
        deadline = time.monotonic() + 60
        while sum(psutil.Process(stranger.pid).cpu_times()[:2]) < 0.95 and time.monotonic() < deadline:
            time.sleep(0.1)
        threading.Thread(target=stranger.wait, daemon=True).start()  # reaped at once: gone, not a zombie
        (tmp_path / "test_stranger.py").write_text(STRANGER_ENDS)
        out = tmp_path / "profile.json"
        done = subprocess.run([sys.executable, str(ROOT / "bench" / "suite_profile.py"), "--out", str(out), "--",
                               str(tmp_path / "test_stranger.py")], cwd=ROOT, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "STRANGER_PID": str(stranger.pid)})
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        [row] = json.loads(out.read_text())["tests"]
        assert 0.4 < row["cpu_s"].get("children (exited)", 0) < 0.9, row
    finally:
        stranger.kill()
        stranger.wait()
