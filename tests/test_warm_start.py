"""Training stages forked from the warm-start server (training/warm_start.py), as `ucai experiment run` starts them:
the same run as a cold `python -m training` process, in the environment and log each request names, with its exit
code; and a caller killed outright leaves neither the server nor a stage running. Real processes, the real model."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.trained_adapters import write_sft_dataset
from training.warm_start import WarmStarter

pytestmark = [pytest.mark.slow, pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[1]


def _sft_argv(dataset: Path, run_id: str, steps: int = 1) -> list[str]:
    return ["sft", "--recipe", "smollm2-135m", "--constitution", "ethical", "--dataset", str(dataset), "--run_id",
            run_id, "--max_steps", str(steps), "--max_length", "64", "--lora_dropout", "0.0", "--seed", "7"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_sft_dataset(tmp_path_factory.mktemp("warm-data"), "ethical")


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_path):
    base = tmp_path_factory.mktemp("warm-server")
    env = {**os.environ, "UCAI_ARTIFACTS": str(base / "server-artifacts"), "TOKENIZERS_PARALLELISM": "false"}
    starter = WarmStarter(env, base / "server.log")
    yield starter, env
    starter.close()


def _manifest(artifacts: Path, run_id: str) -> dict:
    return json.loads((artifacts / "ethical" / "sft" / run_id / "manifest.json").read_text())


def test_a_forked_stage_trains_exactly_what_a_cold_process_trains(server, dataset, tmp_path):
    starter, server_env = server
    ready = starter.ready()
    assert ready.warm and ready.pid != os.getpid(), ready
    cold_artifacts, warm_artifacts = tmp_path / "cold", tmp_path / "warm"
    env = {**server_env, "OMP_NUM_THREADS": "1"}
    cold = subprocess.run([sys.executable, "-m", "training", *_sft_argv(dataset, "cold")], cwd=ROOT,
                          env={**env, "UCAI_ARTIFACTS": str(cold_artifacts)}, capture_output=True, text=True,
                          timeout=600)
    assert cold.returncode == 0, cold.stdout[-3000:] + cold.stderr[-3000:]
    log = tmp_path / "warm.log"
    # The request's environment, not the server's: its run lands in the request's UCAI_ARTIFACTS.
    code = starter.run(_sft_argv(dataset, "warm"), {**env, "UCAI_ARTIFACTS": str(warm_artifacts)}, log, cwd=ROOT)
    assert code == 0, log.read_text(errors="replace")[-3000:]
    assert f"sft: {warm_artifacts / 'ethical' / 'sft' / 'warm'}" in log.read_text(errors="replace")
    assert not (Path(server_env["UCAI_ARTIFACTS"]) / "ethical").exists()
    cold_run, warm_run = _manifest(cold_artifacts, "cold"), _manifest(warm_artifacts, "warm")
    assert warm_run["metrics"]["global_step"] == cold_run["metrics"]["global_step"] == 1
    # Same seed, same thread count: the same first loss to the last bit, forked or not.
    assert warm_run["metrics"]["first_loss"] == cold_run["metrics"]["first_loss"], (warm_run, cold_run)


def test_exit_codes_and_output_reach_the_caller(server, tmp_path):
    starter, env = server
    listed, unknown = tmp_path / "list.log", tmp_path / "unknown.log"
    assert starter.run(["--list"], env, listed) == 0
    assert listed.read_text().split() == ["sft", "reward", "ppo", "rloo", "grpo", "dpo"]
    assert starter.run(["no-such-stage"], env, unknown) == 2
    assert "unknown stage 'no-such-stage'" in unknown.read_text()


CALLER = """
import os, sys
from pathlib import Path
from training.warm_start import WarmStarter
starter = WarmStarter(dict(os.environ), Path(sys.argv[1]))
print(starter.ready().pid, flush=True)
starter.run(sys.argv[3:], dict(os.environ), Path(sys.argv[2]))
"""


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            return True
        if state == "Z":  # exited, not yet reaped by its (dead) parent's reaper
            return True
        time.sleep(0.1)
    return False


def test_a_killed_caller_leaves_no_server_and_no_stage_behind(dataset, tmp_path, model_path):
    log = tmp_path / "stage.log"
    env = {**os.environ, "UCAI_ARTIFACTS": str(tmp_path / "artifacts"), "OMP_NUM_THREADS": "1"}
    caller = subprocess.Popen([sys.executable, "-c", CALLER, str(tmp_path / "server.log"), str(log),
                               *_sft_argv(dataset, "long", steps=10_000)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        server_pid = int(caller.stdout.readline())  # type: ignore[union-attr]
        deadline = time.monotonic() + 300
        while not (log.exists() and "it/s" in log.read_text(errors="replace")):  # the stage is training
            assert time.monotonic() < deadline and caller.poll() is None, log.read_text(errors="replace")[-2000:]
            time.sleep(0.5)
        stage_pids = _children(server_pid)
        assert len(stage_pids) == 1, stage_pids
        caller.send_signal(signal.SIGKILL)  # no chance to clean up
        caller.wait(10)
        assert _gone(server_pid, 30), "the server outlived its caller"
        assert _gone(stage_pids[0], 30), "the stage outlived its caller"
    finally:
        if caller.poll() is None:
            caller.kill()
