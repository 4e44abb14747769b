"""`ucai`: the command line. It talks to the gateway over HTTP and starts processes by module name."""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.panel import Panel

from ucai.api_keys import client_headers
from ucai.layout import Layout

app = typer.Typer(help="UCAI: Constitutional AI as a service.", no_args_is_help=True)
model_app = typer.Typer(help="Model files.", no_args_is_help=True)
constitution_app = typer.Typer(help="Constitutions.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(constitution_app, name="constitution")
data_app = typer.Typer(help="Datasets: import red-team prompts, categorise them, generate SFT / preference data.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")
keys_app = typer.Typer(help="API keys of the gateway (README: Access control).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
eval_app = typer.Typer(help="Evaluate the trained models: statistics and the report (README: Evaluation report).",
                       no_args_is_help=True)
app.add_typer(eval_app, name="eval")
experiment_app = typer.Typer(help="The whole experiment in one command (README: The whole experiment).",
                              no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")
KeysFile = Annotated[Path | None, typer.Option("--file", help="Keys file (default: UCAI_API_KEYS_FILE, else "
                                               ".ucai/api-keys.json).")]
DatasetsDir = Annotated[Path | None, typer.Option(help="Datasets folder (default: UCAI_DATASETS_DIR).")]
BUNDLED = "redteam"


def _layout(datasets_dir: Path | None) -> Layout:
    layout = Layout.from_settings()
    return dataclasses.replace(layout, datasets_dir=datasets_dir) if datasets_dir else layout


def _ensure_imported(layout: Layout, name: str) -> None:
    """The bundled prompt set is imported on first use."""
    from ucai.datasets import REDTEAM_PROMPTS
    from ucai.datasets.importers import import_file, write_jsonl

    path = layout.imported(name)
    if name == BUNDLED and not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(import_file(REDTEAM_PROMPTS, "jsonl").records, path)
    if not path.is_file():
        console.print(f"[red]no imported dataset {name!r} in {layout.datasets_dir}[/] (run `ucai data import` first)")
        raise typer.Exit(2)


@data_app.command("import")
def data_import(
    source: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    format: Annotated[str, typer.Option("--format", help="anthropic-red-team | anthropic-harmless | do-not-answer | "
                                        "harmbench | advbench | jsonl | csv | txt")],
    name: Annotated[str | None, typer.Option(help="Dataset name (default: the file name).")] = None,
    column: Annotated[str | None, typer.Option(help="Prompt column for jsonl/csv.")] = None,
    datasets_dir: DatasetsDir = None,
) -> None:
    """Import red-team prompts into the datasets folder (normalised, deduplicated, with provenance)."""
    from ucai.datasets.importers import import_file, write_jsonl

    try:
        result = import_file(source, format, column=column)
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    for problem in result.problems:
        console.print(f"[yellow]skipped line {problem.line}:[/] {problem.message}")
    dataset = name or source.name.split(".")[0]
    path = _layout(datasets_dir).imported(dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(result.records, path)
    console.print(f"[green]imported[/] {len(result.records)} prompts as {dataset!r} ({result.duplicates} duplicates, "
                  f"{len(result.problems)} problems) → {path}")


@data_app.command("categorise")
def data_categorise(
    dataset: str = BUNDLED, constitution: str = "ethical",
    keep: Annotated[list[str] | None, typer.Option(help="Keep prompts whose top principle is one of these.")] = None,
    min_p: Annotated[float, typer.Option(help="…with at least this probability.")] = 0.0,
    url: GatewayURL = "http://127.0.0.1:8000", datasets_dir: DatasetsDir = None,
) -> None:
    """Score every prompt by principle with the judge; print counts per category; optionally filter."""
    from rich.table import Table

    from ucai.datasets.generate import categorise

    layout = _layout(datasets_dir)
    _ensure_imported(layout, dataset)
    counts = categorise(url, layout, dataset, constitution, keep, min_p)
    table = Table(title=f"{dataset} by principle ({constitution})")
    table.add_column("category")
    table.add_column("prompts", justify="right")
    for category, count in sorted(counts.items(), key=lambda kv: -kv[1]):
        table.add_row(category, str(count))
    console.print(table)


@data_app.command("generate")
def data_generate(
    stage: Annotated[str, typer.Option(help="sft (critique → revision) | prefs (two answers, labelled)")],
    constitution: str = "ethical", dataset: str = BUNDLED,
    rounds: int = 1, max_tokens: int = 128, seed: int = 0, ensemble: int = 2,
    method: Annotated[str, typer.Option(help="prefs: judge method (logprob | contrast | cot | option)")] = "contrast",
    pairs: Annotated[str, typer.Option(help="prefs: sample (two samples) | contrast (RLCD: follow vs violate "
                                       "persona)")] = "contrast",
    label: Annotated[str, typer.Option(help="prefs: judge | construction (the follow answer is chosen)")] = "judge",
    mode: Annotated[str, typer.Option(help="sft: critique (critique → revision) | persona (the follow-persona "
                                      "answer)")] = "critique",
    url: GatewayURL = "http://127.0.0.1:8000", datasets_dir: DatasetsDir = None,
) -> None:
    """Generate a training dataset through the gateway; rerunning continues (or reports) the same batch."""
    from ucai.datasets.generate import generate, generation_params

    if stage not in ("sft", "prefs") or mode not in ("critique", "persona"):
        console.print("[red]--stage must be sft or prefs; --mode critique or persona[/]")
        raise typer.Exit(2)
    layout = _layout(datasets_dir)
    _ensure_imported(layout, dataset)
    params = generation_params(stage, mode, rounds=rounds, max_tokens=max_tokens, seed=seed, ensemble=ensemble,
                               method=method, pairs=pairs, label=label)
    try:
        generate(url, layout, dataset, stage, constitution, params, mode=mode)
    except (RuntimeError, ValueError, httpx.HTTPError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc


console = Console()

GatewayURL = Annotated[str, typer.Option("--url", envvar="UCAI_URL", help="Gateway base URL.")]


@model_app.command("prepare")
def model_prepare(
    out: Annotated[Path | None, typer.Option(help="Output folder (default: the cache folder).")] = None,
) -> None:
    """Convert the bundled SmolLM2 GGUF into a Hugging Face checkpoint (idempotent); print its path."""
    from ucai.model_prepare import prepare_bundled_model

    path = prepare_bundled_model(out or Layout.from_settings().bundled_model_dir())
    print(path)


@constitution_app.command("check")
def constitution_check(files: list[Path]) -> None:
    """Validate constitution files (YAML, or the public JSON format) and print name, hash and size."""
    from ucai.constitutions import ConstitutionError, load_constitution_file

    failed = False
    for file in files:
        try:
            c = load_constitution_file(file)
            pairs = sum(len(p.pairs) for p in c.principles)
            console.print(f"[green]ok[/] {file}: {c.name} {c.content_hash} — {len(c.principles)} principles, "
                          f"{pairs} pairs, {len(c.demonstrations)} demonstrations")
        except ConstitutionError as exc:
            console.print(f"[red]error[/] {exc}")
            failed = True
    raise typer.Exit(1 if failed else 0)


def _keys_file(file: Path | None) -> Path:
    from ucai.settings import get_settings

    return file or get_settings().api_keys_file or Path(".ucai") / "api-keys.json"


@keys_app.command("create")
def keys_create(
    key_id: Annotated[str, typer.Option("--id", help="Names the caller in the audit log; letters, digits, _ and .")],
    scopes: Annotated[str, typer.Option(help="Comma-separated: chat, research, admin (each includes the ones "
                                        "before).")] = "chat",
    file: KeysFile = None,
) -> None:
    """Create (or replace) a key; prints it once — only its sha256 is stored. A running gateway picks it up."""
    from pydantic import ValidationError

    from ucai.api_keys import create_key

    path = _keys_file(file)
    try:
        key = create_key(path, key_id, [s.strip() for s in scopes.split(",") if s.strip()])
    except ValidationError as exc:
        console.print(f"[red]error:[/] {exc.errors()[0]['msg']}")
        raise typer.Exit(2) from exc
    Console(stderr=True).print(f"key {key_id!r} ({scopes}) stored in {path}; it is shown only now:")
    print(key)


@keys_app.command("list")
def keys_list(file: KeysFile = None) -> None:
    """Key ids and scopes (never the keys)."""
    from ucai.api_keys import read_keys_file

    for key in read_keys_file(_keys_file(file)).keys:
        print(f"{key.id}\t{','.join(key.scopes)}")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Option("--id")], file: KeysFile = None) -> None:
    """Remove a key; a running gateway refuses it from its next request."""
    from ucai.api_keys import revoke_key

    if not revoke_key(_keys_file(file), key_id):
        console.print(f"[red]no key {key_id!r}[/]")
        raise typer.Exit(1)


@app.command()
def up(
    port: int = 8000, vllm_port: int = 8001, redis_port: int = 6380, workers: int = 1,
    chat_port: Annotated[int | None, typer.Option(
        help="Port of the chat role's own vllm serve (default: --vllm-port + 1).")] = None,
    adapter: Annotated[list[str] | None, typer.Option(
        help="Serve only these trained LoRAs: the latest run of CONSTITUTION/STAGE (e.g. ethical/ppo) as model "
             "'<constitution>-<stage>'; repeatable. Default: every one found (UCAI_CHAT_ADAPTERS).")] = None,
) -> None:
    """Start the local stack (Redis, vllm serve, worker, gateway); Ctrl-C stops it."""
    command = [sys.executable, "-m", "services.runtime.local_stack", "--port", str(port), "--vllm-port", str(vllm_port),
               "--chat-port", str(chat_port or vllm_port + 1), "--redis-port", str(redis_port),
               "--workers", str(workers)]
    for spec in adapter or []:
        command += ["--adapter", spec]
    os.execv(sys.executable, command)  # replace this process: Ctrl-C reaches the stack directly


@app.command()
def critique(
    prompt: str,
    constitution: Annotated[str, typer.Option(help="Constitution name.")] = "ethical",
    rounds: Annotated[int, typer.Option(min=1, max=8)] = 1,
    principle: Annotated[list[str] | None, typer.Option(help="Principle(s) to use (repeatable).")] = None,
    seed: int | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    url: GatewayURL = "http://127.0.0.1:8000",
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON result.")] = False,
) -> None:
    """Run a critique → revision loop through the gateway and print the trace."""
    body = {"prompt": prompt, "constitution": constitution, "rounds": rounds, "principles": principle,
            "seed": seed, "max_tokens": max_tokens, "temperature": temperature}
    body = {k: v for k, v in body.items() if v is not None}
    try:
        response = httpx.post(f"{url.rstrip('/')}/critique", json=body, timeout=None, headers=client_headers(url))
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach the gateway at {url}: {exc}[/] (is `make up` running?)")
        raise typer.Exit(2) from exc
    data = response.json()
    if response.status_code != 200:
        console.print(f"[red]HTTP {response.status_code}[/] {json.dumps(data, indent=2)}")
        raise typer.Exit(1)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    console.print(Panel(prompt, title="prompt"))
    console.print(Panel(data["initial_response"], title="initial response (round 0)"))
    for step in data["revisions"]:
        console.print(Panel(f"[bold]{step['critique_request']}[/]\n\n{step['critique']}",
                            title=f"round {step['round']} · {step['principle']} · critique"))
        console.print(Panel(f"[bold]{step['revision_request']}[/]\n\n{step['revision']}",
                            title=f"round {step['round']} · revision"))
    console.print(f"[dim]{data['constitution']} {data['constitution_hash']} · {data['usage']['total_tokens']} tokens "
                  f"· {data['timings']['total']:.1f}s · job {data['id']}[/]")


def _training_stages() -> str:
    from training.stages import STAGES  # the stage table (light: no torch)

    return " | ".join(STAGES)


# No typer --help here: `ucai train STAGE --help` is the stage's own, listing every config field.
@app.command("train", add_help_option=False,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(ctx: typer.Context,
          stage: Annotated[str | None, typer.Argument(help=_training_stages())] = None) -> None:
    """Run a training stage: `ucai train sft --recipe smollm2-135m --constitution ethical`; `ucai train STAGE --help`
    lists its options."""
    from training.cli import main

    raise typer.Exit(main([stage, *ctx.args] if stage else ctx.args))


@app.command("judge-check")
def judge_check(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL of {prompt, chosen, rejected}.")],
    constitution: Annotated[str | None, typer.Option(help="Override each row's constitution.")] = None,
    method: Annotated[str, typer.Option(help="Comma-separated methods, side by side: logprob, contrast, cot, "
                                        "option; METHOD:K sets that method's ensemble.")] = "logprob,contrast",
    ensemble: int = 4,
    length_normalised: Annotated[bool, typer.Option(help="contrast: score per answer token.")] = False,
    calibrate: Annotated[bool, typer.Option(help="contrast: fit τ on these pairs; print Brier before/after.")] = False,
    save: Annotated[bool, typer.Option(help="With --calibrate: save τ for (judge model, constitution), which the "
                                       "service then uses.")] = False,
    judge_model: Annotated[str | None, typer.Option(help="Judge model the τ is saved for (default: "
                                                    "UCAI_JUDGE__MODEL).")] = None,
    seed: int = 0,
    url: GatewayURL = "http://127.0.0.1:8000",
    out: Annotated[Path | None, typer.Option(help="Also write the report as JSON here.")] = None,
) -> None:
    """Run POST /compare over labelled pairs with each method; print accuracy, margin, flips, Brier, s/compare."""
    import asyncio

    from rich.table import Table

    from services.cai.contrastive_judge import calibrated_tau, save_tau
    from ucai.evaluation.judge_check import calibrate as fit
    from ucai.evaluation.judge_check import inverts, load_pairs, run_judge_check, summarise
    from ucai.settings import get_settings

    pairs = load_pairs(file)
    table = Table(title=f"judge check: {file.name} ({len(pairs)} pairs{', ' + constitution if constitution else ''})")
    for column in ("method", "ensemble", "accuracy", "mean margin", "flip rate", "Brier", "s / compare"):
        table.add_column(column, justify="right")
    results: dict = {}
    for spec in method.split(","):
        name, _, k = spec.strip().partition(":")
        options = {"method": name, "ensemble": int(k or ensemble), "length_normalised": length_normalised}
        if constitution:
            options["constitution"] = constitution
        try:
            outcomes = asyncio.run(run_judge_check(url, pairs, options, seed))
        except (httpx.HTTPError, RuntimeError) as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from exc
        report = summarise(outcomes)
        results[name] = {"options": options, "report": report.model_dump(),
                         "pairs": [o.model_dump() for o in outcomes]}
        flip = "n/a" if report.position_flip_rate is None else f"{report.position_flip_rate:.3f}"
        table.add_row(name, str(options["ensemble"]), f"{report.accuracy:.3f}", f"{report.mean_margin:+.3f}", flip,
                      f"{report.brier:.3f}", f"{report.seconds_per_compare:.1f}")
        if calibrate and name == "contrast":
            model = judge_model or get_settings().judge.model
            labelled_for = pairs[0][1].constitution
            target = constitution or labelled_for or "ethical"
            result = fit(outcomes, calibrated_tau(model, target, length_normalised),
                         inverted=inverts(url, target, labelled_for))
            results[name]["calibration"] = result.model_dump()
            console.print(f"contrast τ fitted on {result.pairs} pairs: {result.tau:g} — Brier "
                          f"{result.brier_before:.3f} → {result.brier_after:.3f}, log loss "
                          f"{result.log_loss_before:.3f} → {result.log_loss_after:.3f}")
            if save:
                path = save_tau(model, target, length_normalised, result.tau)
                console.print(f"saved τ for ({model}, {target}) in {path}")
    console.print(table)
    if calibrate and "contrast" not in results:
        console.print("[yellow]--calibrate needs --method contrast[/]")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))


@eval_app.command("report")
def eval_report(
    results: Annotated[Path, typer.Option("--results", exists=True, dir_okay=False,
                                          help="Saved evaluation (EvalResults JSON).")],
    out: Annotated[Path | None, typer.Option(help="Output folder (default: <UCAI_ARTIFACTS>/reports/<experiment>/)."
                                             )] = None,
    resamples: Annotated[int, typer.Option(min=2000, help="Bootstrap resamples.")] = 4000,
    seed: int = 0,
) -> None:
    """(Re)generate report.md, report.html (self-contained), report.json and the figures from saved results."""
    from pydantic import ValidationError
    from rich.markup import escape

    from ucai.evaluation.report import write_report
    from ucai.evaluation.results import EvalResults
    from ucai.layout import check_name

    try:
        loaded = EvalResults.load(results)
        out_dir = out or Layout.from_settings().reports_dir() / check_name(loaded.experiment, "experiment")
    except (ValidationError, ValueError) as exc:
        console.print(f"[red]error:[/] {escape(str(results))}: {escape(str(exc))}")
        raise typer.Exit(2) from exc
    written = write_report(loaded, out_dir, base_dir=results.resolve().parent, resamples=resamples, seed=seed)
    for path in written.values():
        print(path)


@eval_app.command("run")
def eval_run(
    experiment: Annotated[str, typer.Option(help="Name of the evaluation (its reports folder).")],
    harmful: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Held-out harmful prompts: "
                                                 "JSONL of {id, prompt}. Not the training prompts.")] = None,
    harmful_dataset: Annotated[str | None, typer.Option(help="…or an imported dataset (`ucai data import`).")] = None,
    model: Annotated[list[str] | None, typer.Option(help="Model to evaluate (repeatable; default: base and every "
                                                    "served model).")] = None,
    constitution: Annotated[list[str] | None, typer.Option(help="Judging constitution (repeatable; default: "
                                                           "ethical, unethical).")] = None,
    helpful: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Helpfulness prompts, JSONL "
                                                 "(default: the 40 shipped).")] = None,
    method: Annotated[str, typer.Option(help="Judge method: contrast | logprob | cot | option.")] = "contrast",
    ensemble: int = 2, max_tokens: int = 128, temperature: float = 0.7, seed: int = 0,
    url: GatewayURL = "http://127.0.0.1:8000",
    out: Annotated[Path | None, typer.Option(help="Results JSON (default: <UCAI_ARTIFACTS>/reports/<experiment>/"
                                             "results.json).")] = None,
    report: Annotated[bool, typer.Option(help="Write the report next to the results.")] = True,
    datasets_dir: DatasetsDir = None,
) -> None:
    """Every model answers the harmful and helpful prompts, the judge compares them in pairs and checks harmful
    content; saves the results (rerunning resumes the same batches), then the report."""
    from rich.markup import escape

    from ucai.datasets.importers import read_jsonl
    from ucai.evaluation.report import write_report
    from ucai.evaluation.results import helpful_prompts
    from ucai.evaluation.run import EvalPlan, load_prompts, order_models, run_eval, served_models
    from ucai.layout import check_name

    if (harmful is None) == (harmful_dataset is None):
        console.print("[red]give exactly one of --harmful PATH or --harmful-dataset NAME[/] (held-out prompts; the "
                      "bundled red-team prompts are training prompts)")
        raise typer.Exit(2)
    constitutions = constitution or ["ethical", "unethical"]
    try:
        if harmful_dataset:
            if harmful_dataset == BUNDLED:
                console.print(f"[yellow]warning:[/] {BUNDLED!r} is the training prompt set, not held out")
            layout = _layout(datasets_dir)
            _ensure_imported(layout, harmful_dataset)
            harmful_rows = [r.model_dump(mode="json", include={"id", "prompt", "messages"}, exclude_none=True)
                            for r in read_jsonl(layout.imported(harmful_dataset))]
        else:
            harmful_rows = load_prompts(harmful)
        out = out or Layout.from_settings().reports_dir() / check_name(experiment, "experiment") / "results.json"
        models = model or order_models(served_models(url), constitutions)
        plan = EvalPlan(experiment, models, constitutions, harmful_rows,
                        load_prompts(helpful) if helpful else helpful_prompts(), method=method, ensemble=ensemble,
                        max_tokens=max_tokens, temperature=temperature, seed=seed)
        results = run_eval(url, plan)
    except (RuntimeError, ValueError, httpx.HTTPError) as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    print(results.save(out))
    counts = results.provenance["counts"]
    console.print(f"{counts['answers']} answers, {counts['comparisons']} comparisons, {counts['harm_checks']} harm "
                  f"checks; failed: { {k: v for k, v in counts.items() if k.endswith('_failed') and v} or 'none'}")
    if report:
        for path in write_report(results, out.parent, base_dir=out.resolve().parent, seed=seed).values():
            print(path)


def _experiment_config(config: Path, overrides: list[str] | None):
    import yaml
    from pydantic import ValidationError

    from ucai.experiment.config import load_experiment

    pairs = {}
    for item in overrides or []:
        key, eq, value = item.partition("=")
        if not eq:
            console.print(f"[red]--set {item!r}: expected KEY=VALUE (e.g. eval.harmful_limit=8)[/]")
            raise typer.Exit(2)
        pairs[key.strip()] = yaml.safe_load(value)
    try:
        return load_experiment(config, pairs)
    except (ValidationError, ValueError, OSError) as exc:
        console.print(f"[red]error:[/] {config}: {exc}")
        raise typer.Exit(2) from exc


ExperimentFile = Annotated[Path, typer.Option("--config", exists=True, dir_okay=False,
                                              help="experiments/<name>.yaml")]
ExperimentSet = Annotated[list[str] | None, typer.Option("--set", help="Override a config value: KEY=VALUE with a "
                                                         "dotted key (e.g. eval.harmful_limit=8); repeatable.")]


@experiment_app.command("run")
def experiment_run(
    config: ExperimentFile,
    from_stage: Annotated[str | None, typer.Option("--from", help="Redo this stage kind and every one after it: "
                                                   "prompts, categorise, split, sft-data, sft, prefs-data, reward, "
                                                   "rl (or ppo/rloo/grpo), dpo, eval, report.")] = None,
    start_stack: Annotated[bool, typer.Option(help="Start a local stack for the stages that call models (ports "
                                              "from the config's `stack`), and stop it at the end.")] = False,
    overrides: ExperimentSet = None,
    url: GatewayURL = "http://127.0.0.1:8000",
) -> None:
    """Run the experiment: every stage not already done for its inputs, then the report."""
    from ucai.experiment.runner import ExperimentError, ExperimentRunner

    cfg = _experiment_config(config, overrides)
    try:
        cfg.check_overrides()  # a typo in a training override fails now, not when its stage starts
        runner = ExperimentRunner(cfg, url=url.rstrip("/"), start_stack=start_stack, force_from=from_stage,
                                  console=console)
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    try:
        out = runner.run()
    except (ExperimentError, RuntimeError, ValueError, OSError, httpx.HTTPError) as exc:
        console.print(f"[red]experiment stopped:[/] {exc}\n(rerun the same command to continue from this stage)")
        raise typer.Exit(1) from exc
    print(out / "report.html")


@experiment_app.command("status")
def experiment_status(config: ExperimentFile, overrides: ExperimentSet = None) -> None:
    """Which stages are recorded as done, with their wall time (without checking their inputs)."""
    from rich.table import Table

    from ucai.experiment.runner import ExperimentRunner

    runner = ExperimentRunner(_experiment_config(config, overrides), console=console)
    records = {r.stage: r for r in runner.store.all()}
    table = Table(title=f"experiment {runner.cfg.name} ({runner.dir})")
    for column in ("stage", "recorded", "wall time (s)"):
        table.add_column(column)
    for step in runner.steps():
        r = records.get(step.id)
        table.add_row(step.id, "done" if r else "-", f"{r.wall_s:.1f}" if r else "")
    console.print(table)


if __name__ == "__main__":
    app()
