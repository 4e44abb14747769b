"""report.md and a self-contained report.html (figures inlined as base64 PNG) from saved `EvalResults`.

The report is first built as a list of blocks (heading, paragraph, table, figure, answers, code) and then rendered
twice, so the Markdown and the HTML can never disagree. Every string that came from a model, a prompt or a file is
escaped in both renderings: answers to red-team prompts are exactly where a `<script>` turns up.
"""
from __future__ import annotations

import base64
import html
import json
import re
import shutil
from pathlib import Path
from typing import Any

from ucai.evaluation.figures import all_figures, safe
from ucai.evaluation.results import EvalResults
from ucai.evaluation.sections import build_blocks
from ucai.evaluation.statistics import RESAMPLES
from ucai.evaluation.summary import summarise

# A block: ("h", level, text) | ("p", text) | ("table", headers, rows) | ("figure", title, path)
#          | ("answers", prompt_id, set, prompt, [(model, text)]) | ("code", text)
Block = tuple

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .5em;
text-align:left;vertical-align:top}th{background:#f3f3f3}img{max-width:100%}figure{margin:1em 0}
.answers{overflow-x:auto}.answers td{min-width:14em;white-space:pre-wrap}pre{background:#f6f6f6;padding:.6em;
overflow-x:auto}"""


def md_escape(text: str) -> str:
    """Markdown renderers pass raw HTML through; a `<` that could open a tag, comment or entity-based trick is the
    only way in, so exactly those are escaped and "p < 0.001" stays readable in the raw file."""
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)


def _md_cell(value: Any) -> str:
    return md_escape(str(value)).replace("|", "\\|").replace("\n", " ")


def _md_quote(text: str) -> str:
    return "\n".join("> " + md_escape(line) for line in (text or "(empty)").splitlines() or [""])


def render_markdown(blocks: list[Block], figures_dir: Path) -> str:
    out: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append("#" * block[1] + " " + md_escape(block[2]))
        elif kind == "p":
            out.append(md_escape(block[1]))
        elif kind == "table":
            headers, rows = block[1], block[2]
            out.append("\n".join(["| " + " | ".join(_md_cell(h) for h in headers) + " |",
                                  "|" + "---|" * len(headers)]
                                 + ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]))
        elif kind == "figure":
            out.append(f"![{md_escape(block[1])}]({block[2].relative_to(figures_dir).as_posix()})")
        elif kind == "answers":
            _, prompt_id, prompt_set, prompt, answers = block
            parts = [f"**{md_escape(prompt_id)}** ({prompt_set}):", _md_quote(prompt)]
            for model, text in answers:
                parts += [f"*{md_escape(model)}*:", _md_quote(text)]
            out.append("\n\n".join(parts))
        elif kind == "code":
            out.append("```\n" + block[1].replace("```", "ˋˋˋ") + "\n```")
    return "\n\n".join(out) + "\n"


def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_html(blocks: list[Block], title: str) -> str:
    e = html.escape
    out = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{e(title)}</title>"
           f"<style>{CSS}</style></head><body>"]
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append(f"<h{block[1]}>{e(block[2])}</h{block[1]}>")
        elif kind == "p":
            out.append(f"<p>{e(block[1])}</p>")
        elif kind == "table":
            head = "".join(f"<th>{e(str(h))}</th>" for h in block[1])
            body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in block[2])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "figure":
            out.append(f'<figure><img alt="{e(block[1])}" src="{_png_data_uri(block[2])}">'
                       f"<figcaption>{e(block[1])}</figcaption></figure>")
        elif kind == "answers":
            _, prompt_id, prompt_set, prompt, answers = block
            head = "".join(f"<th>{e(m)}</th>" for m, _ in answers)
            cells = "".join(f"<td>{e(t or '(empty)')}</td>" for _, t in answers)
            out.append(f"<p><b>{e(prompt_id)}</b> ({e(prompt_set)}): {e(prompt)}</p><div class=answers><table>"
                       f"<tr>{head}</tr><tr>{cells}</tr></table></div>")
        elif kind == "code":
            out.append(f"<pre>{e(block[1])}</pre>")
    out.append("</body></html>")
    return "\n".join(out)


def training_runs(results: EvalResults, base_dir: Path, out_dir: Path) -> list[tuple[str, dict | None, Path | None]]:
    """(label, manifest, copied curves PNG) per referenced run dir; a missing dir or file is simply left out."""
    found = []
    for label, ref in results.run_dirs.items():
        run = Path(ref) if Path(ref).is_absolute() else base_dir / ref
        manifest = None
        if (run / "manifest.json").is_file():
            try:
                manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                manifest = None   # a broken manifest must not stop the report; the row says "no manifest"
        curves = None
        if (run / "training_curves.png").is_file():
            curves = out_dir / f"curves_{safe(label)}.png"
            shutil.copyfile(run / "training_curves.png", curves)   # so report.md's folder is complete on its own
        if manifest is not None or curves is not None:
            found.append((label, manifest, curves))
    return found


def write_report(results: EvalResults, out_dir: Path, base_dir: Path | None = None, resamples: int = RESAMPLES,
                 seed: int = 0) -> dict[str, Path]:
    """Write report.md, report.html, report.json and the figures into `out_dir`; returns name -> path.
    `base_dir` resolves relative `run_dirs` (default: the current directory; the CLI passes the results' folder)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarise(results, resamples=resamples, seed=seed)
    figures = all_figures(summary, results.models, results.constitutions, out_dir)
    runs = training_runs(results, Path(base_dir or Path.cwd()), out_dir)
    blocks = build_blocks(results, summary, figures, runs, resamples)
    title = f"Evaluation report: {results.experiment}"
    written = {"report.md": out_dir / "report.md", "report.html": out_dir / "report.html",
               "report.json": out_dir / "report.json"}
    written["report.md"].write_text(render_markdown(blocks, out_dir), encoding="utf-8")
    written["report.html"].write_text(render_html(blocks, title), encoding="utf-8")
    written["report.json"].write_text(json.dumps({"experiment": results.experiment, "resamples": resamples,
                                                  "seed": seed, **summary.to_json()}, indent=1), encoding="utf-8")
    written.update({path.name: path for path in figures.values()})
    written.update({curves.name: curves for _, _, curves in runs if curves is not None})
    return written
