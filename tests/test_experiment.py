"""The CI-sized experiment (experiments/ci.yaml) end to end on the real stack and the bundled model: killed in the
middle of a stage and rerun, it completes; rerun again with no stack reachable at all, it skips every stage — so no
model can have been called — and trains nothing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.runtime.local_stack import LOCAL_WORKER_CONCURRENCY, free_port
from tests.conftest import make_stack, tail
from ucai.evaluation.results import EvalResults
from ucai.experiment.config import load_experiment
from ucai.experiment.runner import ExperimentRunner
from ucai.experiment.state import StageStore
from ucai.layout import Layout

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "ci.yaml"
# Minutes: `make test` starts it before the rest. Its own timeout, twice the suite's 900 s: 3.8 min on one core of a
# Zen 4 (fp32, AVX2-capped; setup included), and the AVX2-only Zen 3 measured ran the suite 2.4x slower, which would
# put this test within 2x of 900 s (issue 15: no test that close to its timeout).
pytestmark = [pytest.mark.slow, pytest.mark.first, pytest.mark.timeout(1800)]


def _wait_for(log: Path, text: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise AssertionError(f"the run ended (exit {process.returncode}) before {text!r}:\n{tail(log)}")
        time.sleep(0.5)
    raise AssertionError(f"no {text!r} within {timeout_s:.0f}s:\n{tail(log)}")


def _run_dirs(artifacts: Path) -> set[Path]:
    return {p for p in artifacts.glob("*/*/ci-*") if p.is_dir()}


def test_ci_experiment_resumes_after_a_kill_and_then_skips_everything(chat_stack, redis_url, logs, tmp_path):
    artifacts, datasets = tmp_path / "artifacts", tmp_path / "datasets"
    # The chat engine of chat_stack (LoRA, runtime loading) behind a gateway + worker of this experiment's own. The
    # worker takes as many jobs at once as `ucai up`'s (which `--start-stack` runs), so the four data stages' batches
    # reach the engine together: 0.89x the test's time against the default 8 (README, "Two more cuts").
    stack = make_stack(redis_url, chat_stack.vllm_url, logs, UCAI_ARTIFACTS=str(artifacts),
                       UCAI_DATASETS_DIR=str(datasets), UCAI_WORKER_CONCURRENCY=str(LOCAL_WORKER_CONCURRENCY))
    env = {**os.environ, "UCAI_ARTIFACTS": str(artifacts), "UCAI_DATASETS_DIR": str(datasets),
           "UCAI_CHAT__BASE_URL": chat_stack.vllm_url, "OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "ucai.cli", "experiment", "run", "--config", str(CONFIG)]
    cfg = load_experiment(CONFIG)
    runner = ExperimentRunner(cfg, layout=Layout(datasets, artifacts, tmp_path / "cache"))
    store = StageStore(artifacts / "experiments" / "ci")
    steps = [s.id for s in runner.steps()]
    try:
        # 1. Killed (the whole process group, as a crash would) while the first SFT batch runs.
        first = logs / "experiment-1.log"
        with open(first, "wb") as out:
            process = subprocess.Popen([*command, "--url", stack.url], env=env, cwd=ROOT, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_for(first, "ethical.sft-data …", process, 900)
            time.sleep(1.0)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
        assert store.get("split") is not None
        assert store.get("ethical.sft-data") is None, "a stage killed half-way must not be recorded as done"

        # 2. The same command again: it continues from the killed stage and completes.
        second = subprocess.run([*command, "--url", stack.url], env=env, cwd=ROOT, capture_output=True, text=True,
                                timeout=2400)
        (logs / "experiment-2.log").write_text(second.stdout + second.stderr)
        assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
        for skipped in ("prompts", "categorise", "split"):
            assert f"{skipped}: done earlier for these inputs — skipped" in second.stdout
        assert "training stages start warm" in second.stdout  # forked from training/warm_start.py's server
        assert {r.stage for r in store.all()} == set(steps)
    finally:
        stack.close()

    report = artifacts / "reports" / "ci"
    results = EvalResults.load(report / "results.json")
    assert results.models == cfg.models() == ["base", "ethical-sft", "ethical-grpo", "unethical-sft",
                                              "unethical-grpo"]
    heldout = {json.loads(line)["id"] for line in (datasets / "imports" / "ci-heldout.jsonl").read_text().splitlines()}
    harmful = {a.prompt_id for a in results.answers if a.set == "harmful"}
    assert harmful and harmful <= heldout, "the harmful evaluation prompts are the held-out ones"
    assert len(results.answers) == len(cfg.models()) * (len(harmful) + cfg.eval.helpful_limit)
    assert {c.constitution for c in results.comparisons} == {"ethical", "unethical"}
    markdown = (report / "report.md").read_text()
    for model in cfg.models():
        assert f"| {model} |" in markdown, f"no table row for {model}"
    assert "ethical-grpo vs base" in markdown and "ethical-grpo vs unethical-grpo" in markdown  # the headline
    pngs = list((report / "figures").glob("*.png")) if (report / "figures").is_dir() else list(report.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert set(results.provenance["wall_time_s"]) >= set(steps) - {"report"}  # written during the report stage
    assert results.provenance["commit"] and results.provenance["machine"]["cores"]
    runs, report_mtime = _run_dirs(artifacts), (report / "report.md").stat().st_mtime

    # 3. Rerun with no stack anywhere: every stage is skipped, so no model was called and nothing was trained.
    third = subprocess.run([*command, "--url", f"http://127.0.0.1:{free_port()}"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stdout[-4000:] + third.stderr[-4000:]
    assert third.stdout.count("done earlier for these inputs — skipped") == len(steps)
    assert _run_dirs(artifacts) == runs
    assert (report / "report.md").stat().st_mtime == report_mtime
