"""`ucai`: the command line. It talks to the gateway over HTTP and starts processes by module name."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.panel import Panel

from ucai.settings import get_settings

app = typer.Typer(help="UCAI: Constitutional AI as a service.", no_args_is_help=True)
model_app = typer.Typer(help="Model files.", no_args_is_help=True)
constitution_app = typer.Typer(help="Constitutions.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(constitution_app, name="constitution")
console = Console()

GatewayURL = Annotated[str, typer.Option("--url", envvar="UCAI_URL", help="Gateway base URL.")]


@model_app.command("prepare")
def model_prepare(
    out: Annotated[Path | None, typer.Option(help="Output folder (default: the cache folder).")] = None,
) -> None:
    """Convert the bundled SmolLM2 GGUF into a Hugging Face checkpoint (idempotent); print its path."""
    from ucai.model_prepare import default_model_dir, prepare_bundled_model

    path = prepare_bundled_model(out or default_model_dir(get_settings().cache_dir))
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


@app.command()
def up(
    port: int = 8000, vllm_port: int = 8001, redis_port: int = 6380, workers: int = 1,
) -> None:
    """Start the local stack (Redis, vllm serve, worker, gateway); Ctrl-C stops it."""
    command = [sys.executable, "-m", "services.local_stack", "--port", str(port), "--vllm-port", str(vllm_port),
               "--redis-port", str(redis_port), "--workers", str(workers)]
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
        response = httpx.post(f"{url.rstrip('/')}/critique", json=body, timeout=None)
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


@app.command("judge-check")
def judge_check(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL of {prompt, chosen, rejected}.")],
    constitution: Annotated[str | None, typer.Option(help="Override each row's constitution.")] = None,
    method: Annotated[str, typer.Option(help="logprob | cot | option")] = "logprob",
    ensemble: int = 4,
    seed: int = 0,
    url: GatewayURL = "http://127.0.0.1:8000",
    out: Annotated[Path | None, typer.Option(help="Also write the report as JSON here.")] = None,
) -> None:
    """Run POST /compare over labelled pairs and print accuracy, margin, position flips and Brier score."""
    import asyncio

    from rich.table import Table

    from ucai.judge_check import load_pairs, run_judge_check, summarise, write_report

    pairs = load_pairs(file)
    options = {"method": method, "ensemble": ensemble}
    if constitution:
        options["constitution"] = constitution
    try:
        outcomes = asyncio.run(run_judge_check(url, pairs, options, seed))
    except (httpx.HTTPError, RuntimeError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    report = summarise(outcomes)
    table = Table(title=f"judge check: {file.name} ({method}, ensemble {ensemble})")
    for column in ("pairs", "accuracy", "mean margin", "position flip rate", "Brier", "s / compare"):
        table.add_column(column, justify="right")
    flip = "n/a" if report.position_flip_rate is None else f"{report.position_flip_rate:.3f}"
    table.add_row(str(report.pairs), f"{report.accuracy:.3f}", f"{report.mean_margin:+.3f}", flip,
                  f"{report.brier:.3f}", f"{report.seconds_per_compare:.1f}")
    console.print(table)
    if out:
        write_report(report, outcomes, out)


if __name__ == "__main__":
    app()
