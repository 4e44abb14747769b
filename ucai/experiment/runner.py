"""`ucai experiment run`: the whole experiment, stage by stage, skipping every stage already done for its inputs.

Generation and judging go through the gateway as batches (so they scale with the workers and resume after a crash);
training runs `python -m training STAGE` as a child process (its memory is freed when it ends), forked from a
process that has imported torch and TRL once (`train.warm_start`, training/warm_start.py). The stack is needed
only by the stages that call models, and only reached (or, with `start_stack`, started) when one of them runs: a rerun
with nothing to do never touches a model.
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from rich.console import Console
from rich.table import Table

from ucai.api_keys import client_headers
from ucai.child_processes import die_with_parent
from ucai.datasets.importers import import_file, read_jsonl, write_jsonl
from ucai.experiment import provenance
from ucai.experiment.config import ExperimentConfig
from ucai.experiment.split import check_no_leak, hash_order, record_text, split
from ucai.experiment.state import StageRecord, StageStore, file_sha256, stage_key
from ucai.layout import Layout
from ucai.settings import ROLE_NAMES, get_settings

if TYPE_CHECKING:
    from training.warm_start import WarmStarter

# Stage kinds in pipeline order; `--from KIND` redoes every stage of that kind and after.
KINDS = ("prompts", "categorise", "split", "sft-data", "sft", "prefs-data", "reward", "rl", "dpo", "eval", "report")
RL_ALGOS = ("ppo", "rloo", "grpo")
# The warm-start server starts with the first of these that runs: it imports while the data is generated.
WARM_FROM = ("sft-data", "prefs-data", "sft", "reward", "rl", "dpo")


class ExperimentError(RuntimeError):
    """A stage failed; the message says which and where its log is."""


Outcome = tuple[str, dict[str, str], dict[str, Any]]  # (fingerprint, outputs, info)


@dataclass
class Step:
    id: str                      # "prompts", "ethical.sft", …: the record's name
    kind: str                    # one of KINDS
    config: Any                  # what the stage's key hashes besides its inputs
    inputs: list[str]            # step ids whose fingerprints it reads
    action: Callable[[], Outcome]
    needs_stack: bool = False


@dataclass
class _Running:
    """A stage that runs now (its thread), for the status line."""

    step: Step
    key: str
    started: float
    log: Path | None = None  # a training stage's log, whose latest line the status shows

    def describe(self) -> str:
        line = _last_line(self.log) if self.log else ""
        return f"{self.step.id} {time.monotonic() - self.started:.0f}s" + (f" {line}" if line else "")


def _is_training(step: Step) -> bool:
    return step.kind in ("sft", "reward", "rl", "dpo")


@dataclass
class ExperimentRunner:
    cfg: ExperimentConfig
    url: str = "http://127.0.0.1:8000"
    layout: Layout = field(default_factory=Layout.from_settings)
    start_stack: bool = False
    force_from: str | None = None
    console: Console = field(default_factory=Console)

    def __post_init__(self) -> None:
        self.dir = (self.layout.artifacts_dir / "experiments" / self.cfg.name).resolve()
        self.store = StageStore(self.dir)
        self._stack: subprocess.Popen | None = None
        self._stack_ready = False
        self._warm: WarmStarter | None = None
        self._warm_said = False
        self.env = dict(os.environ)
        if self.force_from in RL_ALGOS:
            self.force_from = "rl"
        if self.force_from is not None and self.force_from not in KINDS:
            raise ValueError(f"--from {self.force_from!r}: one of {', '.join(KINDS)}")

    # --- names -----------------------------------------------------------------------------------------------------
    def dataset_name(self, part: str) -> str:
        return f"{self.cfg.name}-{part}"

    def heldout(self) -> list:
        return read_jsonl(self.layout.imported(self.dataset_name("heldout")))

    # --- the plan --------------------------------------------------------------------------------------------------
    def steps(self) -> list[Step]:
        cfg = self.cfg
        steps = [Step("prompts", "prompts", cfg.prompts.model_dump(exclude={"categorise", "keep"}) |
                      {"salt": cfg.split.salt}, [], self._prompts)]
        split_input = "prompts"
        if cfg.prompts.categorise:
            steps.append(Step("categorise", "categorise", {"keep": cfg.prompts.keep, "by": cfg.constitutions[0]},
                              ["prompts"], self._categorise, needs_stack=True))
            split_input = "categorise"
        steps.append(Step("split", "split", cfg.split.model_dump(), [split_input], lambda: self._split(split_input)))
        trained: list[str] = []
        for c in cfg.constitutions:
            steps.append(Step(f"{c}.sft-data", "sft-data", cfg.data.sft.model_dump(), ["split"],
                              lambda c=c: self._generate(c, "sft"), needs_stack=True))
            steps.append(Step(f"{c}.prefs-data", "prefs-data", cfg.data.prefs.model_dump(), ["split"],
                              lambda c=c: self._generate(c, "prefs"), needs_stack=True))
            for stage in cfg.training_stages():
                inputs = {"sft": [f"{c}.sft-data"], "reward": [f"{c}.prefs-data"], "dpo": [f"{c}.prefs-data"]}.get(
                    stage, ["split", f"{c}.sft", f"{c}.reward"])
                kind = "rl" if stage in RL_ALGOS else stage
                steps.append(Step(f"{c}.{stage}", kind, self._train_config(stage), inputs,
                                  lambda c=c, stage=stage: self._train(c, stage)))
                trained.append(f"{c}.{stage}")
        steps.append(Step("eval", "eval", cfg.eval.model_dump() | {"models": cfg.models()}, ["split", *trained],
                          self._eval, needs_stack=True))
        steps.append(Step("report", "report", {"version": 1}, ["eval"], self._report))
        # Data before training within a constitution: sft-data, prefs-data, then the training stages in order.
        return steps

    def _train_config(self, stage: str) -> dict[str, Any]:
        recipe = self.cfg.recipe_file(stage)
        return {"recipe": file_sha256(recipe), "overrides": self.cfg.overrides(stage), "model": self.cfg.model}

    # --- running ---------------------------------------------------------------------------------------------------
    def run(self) -> Path:
        """Run (or skip) every stage, each once the stages it reads are done (`cfg.parallel` says how many at once);
        return the report folder. A failed stage stops new ones; those already running finish and are recorded."""
        steps = self.steps()
        forced_from = KINDS.index(self.force_from) if self.force_from else None
        fingerprints: dict[str, str] = {}
        summary: list[tuple[str, str, float]] = []
        running: dict[str, _Running] = {}
        finished: queue.Queue[tuple[Step, Outcome | None, BaseException | None]] = queue.Queue()
        failures: list[BaseException] = []
        started = time.monotonic()
        number = {step.id: n for n, step in enumerate(steps, 1)}
        label = lambda step: f"[{number[step.id]}/{len(steps)}] {step.id}"  # noqa: E731
        self.console.rule(f"experiment {self.cfg.name}: {len(steps)} stages, constitutions "
                          f"{', '.join(self.cfg.constitutions)}")
        status = None
        try:
            while True:
                pending = [s for s in steps if s.id not in fingerprints and s.id not in running]
                if self.cfg.parallel.stages > 1:  # side by side: a stage kind for every chain before the next kind
                    pending.sort(key=lambda s: KINDS.index(s.kind))
                for step in pending if not failures else []:
                    if not all(i in fingerprints for i in step.inputs) or not self._slot_free(step, running):
                        continue
                    key = stage_key(step.id, step.config, {i: fingerprints[i] for i in step.inputs})
                    forced = forced_from is not None and KINDS.index(step.kind) >= forced_from
                    record = None if forced else self.store.done(step.id, key)
                    if record is not None:
                        fingerprints[step.id] = record.fingerprint
                        summary.append((step.id, "skipped (done)", record.wall_s))
                        self.console.print(f"[dim]{label(step)}: done earlier for these inputs — skipped[/]")
                        continue
                    self.store.drop(step.id)  # a forced or stale stage: its old record no longer stands
                    self.console.print(f"[bold]{label(step)}[/] …")
                    if step.needs_stack:
                        self._ensure_stack()
                    if self.cfg.train.warm_start and self._warm is None and step.kind in WARM_FROM:
                        self._start_warm()
                    log = self._log(step.id) if _is_training(step) else None
                    running[step.id] = _Running(step, key, time.monotonic(), log)
                    threading.Thread(target=self._run_step, args=(step, finished), daemon=True,
                                     name=f"stage {step.id}").start()
                if not running:
                    break
                # One status line for what runs, unless a stage shows its own progress bars.
                own_bars = any(self._shows_bars(r.step) for r in running.values())
                if status is None and not own_bars:
                    status = self.console.status("")
                    status.start()
                elif status is not None and own_bars:
                    status.stop()
                    status = None
                if status is not None:
                    status.update(" · ".join(r.describe() for r in running.values())[:200])
                try:
                    step, outcome, error = finished.get(timeout=1.0)
                except queue.Empty:
                    continue
                done = running.pop(step.id)
                wall = time.monotonic() - done.started
                if error is not None:
                    failures.append(error)
                    self.console.print(f"[red]{label(step)} failed after {wall:.1f}s[/]")
                    continue
                fingerprint, outputs, info = outcome
                self.store.put(StageRecord(stage=step.id, key=done.key, fingerprint=fingerprint, outputs=outputs,
                                           info=info, wall_s=round(wall, 2)))
                fingerprints[step.id] = fingerprint
                summary.append((step.id, "ran", wall))
                self.console.print(f"[green]{label(step)}[/] done in {wall:.1f}s")
            if failures:
                raise failures[0]
        finally:
            if status is not None:
                status.stop()
            self._stop_stack()
            if self._warm is not None:
                self._warm.close()
                self._warm = None
            self._print_summary(summary, time.monotonic() - started)
        return self.report_dir()

    def _log(self, step_id: str) -> Path:
        """A child process's log (training stages), which the status line tails."""
        return self.dir / "logs" / f"{step_id}.log"

    def _slot_free(self, step: Step, running: dict[str, _Running]) -> bool:
        """At most `parallel.stages` at once, of which at most `parallel.training_stages` train; with `train_alone`,
        training and model stages never at the same time."""
        limits = self.cfg.parallel
        if len(running) >= limits.stages:
            return False
        kinds = [_is_training(r.step) for r in running.values()]
        if limits.train_alone and any(k != _is_training(step) for k in kinds):
            return False
        return not _is_training(step) or sum(kinds) < limits.training_stages

    def _shows_bars(self, step: Step) -> bool:
        """Model stages show their batches' progress bars, but data stages only when they run one at a time."""
        return step.kind in ("categorise", "eval") or (step.needs_stack and self.cfg.parallel.stages == 1)

    @staticmethod
    def _run_step(step: Step, finished: queue.Queue) -> None:
        """A stage's action, in a thread of its own; the outcome (or the error) goes back to the main thread."""
        try:
            finished.put((step, step.action(), None))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
            finished.put((step, None, exc))

    def _print_summary(self, rows: list[tuple[str, str, float]], total: float) -> None:
        table = Table(title=f"experiment {self.cfg.name}: {total:.0f}s this run")
        for column in ("stage", "this run", "stage wall time (s)"):
            table.add_column(column, justify="left" if column != "stage wall time (s)" else "right")
        for stage, status, wall in rows:
            table.add_row(stage, status, f"{wall:.1f}")
        self.console.print(table)

    # --- the stack -------------------------------------------------------------------------------------------------
    def _ensure_stack(self) -> None:
        if self._stack_ready:
            return
        if self.start_stack:
            self._launch_stack()
        try:
            response = httpx.get(f"{self.url}/ready", timeout=10, headers=client_headers(self.url))
        except httpx.HTTPError as exc:
            raise ExperimentError(f"no gateway at {self.url} ({exc}): start the stack (`make up`) or pass "
                                  "--start-stack") from exc
        if response.status_code != 200:
            raise ExperimentError(f"the gateway at {self.url} is not ready: HTTP {response.status_code} "
                                  f"{response.text[:300]}")
        self._stack_ready = True

    def _launch_stack(self) -> None:
        s = self.cfg.stack
        self.url = f"http://127.0.0.1:{s.port}"
        local = f"http://127.0.0.1:{s.vllm_port}/v1"
        env = {**self.env, **{f"UCAI_{role.upper()}__BASE_URL": local for role in ROLE_NAMES}}
        env.pop("REDIS_URL", None)
        if self.cfg.model:
            env["UCAI_MODEL_PATH"] = self.cfg.model
        logs = self.dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "services.runtime.local_stack", "--port", str(s.port), "--vllm-port",
                   str(s.vllm_port), "--chat-port", str(s.chat_port), "--redis-port", str(s.redis_port),
                   "--workers", str(s.workers), "--redis-dir", str(self.dir / "redis"), "--log-dir", str(logs)]
        self.console.print(f"starting the local stack on :{s.port} (log {logs / 'stack.log'}) …")
        with open(logs / "stack.log", "ab") as log:
            self._stack = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True, preexec_fn=die_with_parent)
        # Training runs register their adapters with this stack's chat engine when they finish: the one engine, or
        # the chat role's own (UCAI_CHAT_ENGINE=own).
        chat_port = s.chat_port if get_settings().chat_engine == "own" else s.vllm_port
        self.env["UCAI_CHAT__BASE_URL"] = f"http://127.0.0.1:{chat_port}/v1"
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            if self._stack.poll() is not None:
                raise ExperimentError(f"the local stack exited with code {self._stack.returncode}; see "
                                      f"{logs / 'stack.log'}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise ExperimentError(f"the local stack did not get ready in 30 min; see {logs / 'stack.log'}")

    def _start_warm(self) -> None:
        """The warm-start server, started in this (the main) thread so that it dies with the run, as its first data
        stage starts: it imports while the data is generated."""
        from training.warm_start import WarmStarter

        log = self._log("warm-start")
        log.parent.mkdir(parents=True, exist_ok=True)
        self._warm = WarmStarter(self.env, log)

    def _stop_stack(self) -> None:
        if self._stack is not None:
            from services.runtime.local_stack import stop

            stop(self._stack, timeout_s=60)
            self._stack = None
            self._stack_ready = False

    # --- stages ----------------------------------------------------------------------------------------------------
    def _prompts(self) -> Outcome:
        p = self.cfg.prompts
        if p.source == "bundled":
            from ucai.datasets import REDTEAM_PROMPTS

            source, fmt = Path(REDTEAM_PROMPTS), "jsonl"
        else:
            source, fmt = Path(p.source).expanduser(), p.format
        result = import_file(source, fmt, column=p.column)
        records = hash_order(result.records, self.cfg.split.salt)[:p.limit]
        out = self.layout.imported(self.dataset_name("prompts"))
        out.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(records, out)
        self.console.print(f"  {len(records)} prompts from {source} ({result.duplicates} duplicates dropped)")
        return (file_sha256(out) + file_sha256(source)[:16], {"prompts": str(out)},
                {"source": str(source), "prompts": len(records), "duplicates": result.duplicates})

    def _categorise(self) -> Outcome:
        from ucai.datasets.generate import categorise

        keep = self.cfg.prompts.keep or None
        counts = categorise(self.url, self.layout, self.dataset_name("prompts"), self.cfg.constitutions[0], keep, 0.0)
        name = self.dataset_name("prompts") + ("-" + "-".join(keep) if keep else ".categorised")
        out = self.layout.imported(name)
        self.console.print("  " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))
        return file_sha256(out), {"prompts": str(out)}, {"categories": counts}

    def _split(self, source_step: str) -> Outcome:
        source = Path(self.store.get(source_step).outputs["prompts"])
        records = read_jsonl(source)
        train, heldout = split(records, self.cfg.split.heldout_fraction, self.cfg.split.salt)
        if not train or not heldout:
            raise ExperimentError(f"split of {len(records)} prompts left {len(train)} for training and {len(heldout)} "
                                  "held out: use more prompts or another heldout_fraction")
        paths = {part: self.layout.imported(self.dataset_name(part)) for part in ("train", "heldout")}
        write_jsonl(train, paths["train"])
        write_jsonl(heldout, paths["heldout"])
        check_no_leak([record_text(r) for r in heldout], [paths["train"]])
        self.console.print(f"  {len(train)} train / {len(heldout)} held out (hash split, no overlap)")
        return (file_sha256(paths["train"])[:32] + file_sha256(paths["heldout"])[:32],
                {k: str(v) for k, v in paths.items()}, {"train": len(train), "heldout": len(heldout)})

    def _generate(self, constitution: str, kind: str) -> Outcome:
        from ucai.datasets.generate import generate, generation_params

        d = self.cfg.data
        name = self.dataset_name("train")
        if kind == "sft":
            params = generation_params("sft", d.sft.mode, rounds=d.sft.rounds, max_tokens=d.sft.max_tokens,
                                       seed=d.sft.seed)
            mode = d.sft.mode
        else:
            params = generation_params("prefs", max_tokens=d.prefs.max_tokens, seed=d.prefs.seed,
                                       ensemble=d.prefs.ensemble, method=d.prefs.method, pairs=d.prefs.pairs,
                                       label=d.prefs.label)
            mode = "critique"
        manifest = self.layout.dataset_manifest(kind, constitution, name)
        manifest.unlink(missing_ok=True)  # this stage is due: regenerate (the batch itself resumes if it can)
        generate(self.url, self.layout, name, kind, constitution, params, mode=mode,
                 progress=self.cfg.parallel.stages == 1)
        path = self.layout.dataset(kind, constitution, name)
        checked = check_no_leak([record_text(r) for r in self.heldout()], [path])
        rows = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        return file_sha256(path), {"dataset": str(path), "manifest": str(manifest)}, {"rows": rows,
                                                                                     "leak_checked": checked}

    def _train(self, constitution: str, stage: str) -> Outcome:
        cfg = self.cfg
        inputs = {"sft": f"{constitution}.sft-data", "reward": f"{constitution}.prefs-data",
                  "dpo": f"{constitution}.prefs-data"}
        if stage in inputs:
            dataset = Path(self.store.get(inputs[stage]).outputs["dataset"])
            extra = []
        else:  # RL: the training prompts, the SFT policy and the reward model of this experiment
            dataset = Path(self.store.get("split").outputs["train"])
            extra = ["--sft_model_path", self.store.get(f"{constitution}.sft").outputs["run"],
                     "--reward_model_path", self.store.get(f"{constitution}.reward").outputs["run"]]
        check_no_leak([record_text(r) for r in self.heldout()], [dataset])
        run_id = f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{os.getpid() % 10000:04d}"
        argv = [stage, "--recipe", str(cfg.recipe_file(stage)), "--constitution", constitution, "--dataset",
                str(dataset), "--run_id", run_id, *extra]
        if cfg.model:
            argv += ["--model_name_or_path", cfg.model]
        for name, value in cfg.overrides(stage).items():
            argv += [f"--{name}", value if isinstance(value, str) else json.dumps(value)]
        log = self._log(f"{constitution}.{stage}")
        self._run_training(argv, log)
        run_dir = (self.layout.stage_dir(constitution, stage) / run_id).resolve()
        manifest_path = run_dir / "manifest.json"
        if not manifest_path.is_file():
            raise ExperimentError(f"{constitution}.{stage}: finished without {manifest_path}; see {log}")
        manifest = json.loads(manifest_path.read_text())
        return run_id, {"run": str(run_dir)}, {"metrics": manifest.get("metrics", {}),
                                                "wall_time_s": manifest.get("wall_time_s"), "log": str(log)}

    def _run_training(self, argv: list[str], log: Path) -> None:
        """`python -m training ARGV` into `log` (the run's status line shows its latest line), forked warm where the
        warm-start server is up, else as a new process; raise if it fails."""
        log.parent.mkdir(parents=True, exist_ok=True)
        env = self.env
        if self.cfg.parallel.training_stages > 1:  # an equal share of the cores each, so none spin-waits on another
            threads = max(1, len(os.sched_getaffinity(0)) // self.cfg.parallel.training_stages)
            env = {**env, "OMP_NUM_THREADS": str(threads)}
        if self._warm is not None:
            from training.warm_start import WarmStartUnavailable

            try:
                ready = self._warm.ready()
                if not self._warm_said:
                    self._warm_said = True
                    self.console.print(f"[dim]training stages start warm: forked from a process that imported "
                                       f"torch and TRL once ({ready.preload_s:.1f}s)[/]")
                returncode = self._warm.run(argv, env, log)
            except WarmStartUnavailable as exc:
                if not self._warm_said:
                    self._warm_said = True
                    self.console.print(f"[yellow]training stages start cold: {exc}[/]")
            else:
                self._check_exit(log, returncode)
                return
        self._run_logged([sys.executable, "-m", "training", *argv], log, env)

    def _check_exit(self, log: Path, returncode: int) -> None:
        if returncode != 0:
            raise ExperimentError(f"{log.stem} failed (exit {returncode}); last lines of {log}:\n"
                                  + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))

    def _run_logged(self, command: list[str], log: Path, env: dict[str, str]) -> None:
        """Run a child process into `log`; raise if it fails."""
        with open(log, "ab") as out:
            process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                       preexec_fn=die_with_parent)
            try:
                process.wait()
            except BaseException:
                process.terminate()
                process.wait(30)
                raise
        self._check_exit(log, process.returncode)

    def _serve(self) -> list[str]:
        """This experiment's runs become the served `<constitution>-<stage>` adapters (its runs are `latest`)."""
        for c in self.cfg.constitutions:
            for stage in self.cfg.training_stages():
                if stage != "reward":
                    self.layout.set_latest(Path(self.store.get(f"{c}.{stage}").outputs["run"]))
        with httpx.Client(base_url=self.url, timeout=600, headers=client_headers(self.url)) as client:
            response = client.post("/admin/adapters/reload")
            if response.status_code != 200:
                raise ExperimentError(f"POST /admin/adapters/reload: HTTP {response.status_code}: "
                                      f"{response.text[:500]}")
            report = response.json()
        if report.get("failed"):
            raise ExperimentError(f"the chat engine could not load: {report['failed']}")
        from ucai.evaluation.run import served_models

        missing = sorted(set(self.cfg.models()) - set(served_models(self.url)))
        if missing:
            raise ExperimentError(f"not served after the reload: {missing} (is the gateway's UCAI_ARTIFACTS "
                                  f"{self.layout.artifacts_dir}?)")
        return self.cfg.models()

    def _eval(self) -> Outcome:
        from ucai.evaluation.results import helpful_prompts
        from ucai.evaluation.run import EvalPlan, run_eval

        e = self.cfg.eval
        models = self._serve()
        harmful = [{"id": r.id, **({"prompt": r.prompt} if r.prompt is not None else
                                   {"messages": [m.model_dump() for m in r.messages or []]})}
                   for r in hash_order(self.heldout(), self.cfg.split.salt)[:e.harmful_limit]]
        helpful = helpful_prompts()[:e.helpful_limit]
        plan = EvalPlan(experiment=self.cfg.name, models=models, constitutions=self.cfg.constitutions,
                        harmful=harmful, helpful=helpful, method=e.method, ensemble=e.ensemble,
                        both_orders=e.both_orders, max_tokens=e.max_tokens, temperature=e.temperature, seed=e.seed,
                        harm_check=e.harm_check)
        run_dirs = {f"{c}-{s}": self.store.get(f"{c}.{s}").outputs["run"]
                    for c in self.cfg.constitutions for s in self.cfg.training_stages()}
        results = run_eval(self.url, plan, provenance={"gateway": self.url}, run_dirs=run_dirs)
        path = results.save(self.dir / "eval" / "results.json")
        return file_sha256(path), {"results": str(path)}, {"answers": len(results.answers),
                                                           "comparisons": len(results.comparisons)}

    def report_dir(self) -> Path:
        return self.layout.reports_dir() / self.cfg.name

    def _report(self) -> Outcome:
        from ucai.evaluation.report import write_report
        from ucai.evaluation.results import EvalResults

        results = EvalResults.load(Path(self.store.get("eval").outputs["results"]))
        # Absolute run dirs: the report resolves them against its own folder (runs recorded relative to the cwd).
        results.run_dirs = {k: str(Path(v).resolve()) for k, v in results.run_dirs.items()}
        extra = self._provenance()
        walls = {**results.provenance.get("wall_time_s", {}), **extra.pop("wall_time_s")}
        results.provenance.update(extra, wall_time_s=walls)
        out = self.report_dir()
        saved = results.save(out / "results.json")  # `ucai eval report --results` regenerates from this
        written = write_report(results, out, base_dir=saved.parent)
        self.console.print(f"  report: {written['report.html']}")
        return file_sha256(out / "report.md"), {k: str(v) for k, v in written.items()}, {}

    def _provenance(self) -> dict[str, Any]:
        records = {r.stage: r for r in self.store.all()}
        datasets = {}
        for c in self.cfg.constitutions:
            for kind in ("sft", "prefs"):
                manifest = provenance.dataset_manifest(self.layout.dataset(kind, c, self.dataset_name("train")))
                if manifest:
                    datasets[f"{c}/{kind}"] = manifest
        stage_walls = {stage: r.wall_s for stage, r in records.items()}
        return {
            "experiment_config": self.cfg.model_dump(mode="json"),
            "commit": provenance.git_commit(),
            "machine": provenance.machine(),
            "recipes": provenance.recipes({s: self.cfg.recipe_file(s) for s in self.cfg.training_stages()}),
            "datasets": datasets,
            "split": records["split"].info if "split" in records else {},
            "training": {stage: r.info.get("metrics") for stage, r in records.items() if "metrics" in r.info},
            "wall_time_s": {**stage_walls, "total": round(sum(stage_walls.values()), 1)},
        }


def _last_line(log: Path, size: int = 4096) -> str:
    """The latest progress line of a log (tqdm rewrites its line with \\r)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - size))
            tail = f.read().decode(errors="replace")
    except OSError:
        return ""
    parts = [p.strip() for p in tail.replace("\r", "\n").split("\n") if p.strip()]
    return parts[-1] if parts else ""
