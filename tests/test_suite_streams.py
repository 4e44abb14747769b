"""`make test`'s two streams (tests/conftest.py): the order in which a stream takes the suite's modules."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


EXPERIMENT = "tests/test_experiment.py"  # marked `first`
MODEL = ("tests/test_critique_api.py", "tests/contract/test_contract_load.py")  # `slow`
PROCESSES = ("tests/contract/test_contract_auth.py", "tests/test_worker_heartbeat.py",  # integration, contract
             "tests/test_bench_scripts.py")
UNIT = ("tests/test_layout.py", "tests/test_judge_math.py", "tests/test_api_keys.py")  # no marker


def _modules(files: list[str], **env: str) -> list[str]:
    """The modules in the order pytest collects them, as a stream of `make test` (or plain pytest) would."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")} | env
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
                          cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    modules: list[str] = []
    for line in done.stdout.splitlines():
        module = line.split("::")[0]
        if "::" in line and module not in modules:
            modules.append(module)
    return modules


def test_a_stream_takes_the_experiment_then_the_model_then_the_processes_then_the_unit_tests():
    files = [*UNIT, *PROCESSES, *MODEL, EXPERIMENT]  # the reverse of the order a stream should take them in
    streamed, plain = _modules(files, PYTEST_XDIST_WORKER="gw0", PYTEST_XDIST_WORKER_COUNT="1"), _modules(files)
    assert plain == files  # one stream (plain pytest): the order it was given
    assert streamed[0] == EXPERIMENT and sorted(streamed) == sorted(files)
    position = {module: n for n, module in enumerate(streamed)}
    assert max(position[m] for m in MODEL) < min(position[m] for m in PROCESSES)
    assert max(position[m] for m in PROCESSES) < min(position[m] for m in UNIT)
