"""The report's figures as PNG files (matplotlib, Agg backend: no display needed, safe in a worker or CI)."""
from __future__ import annotations

import math
import re
from pathlib import Path

from ucai.evaluation.summary import Summary

DPI = 90


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def safe(name: str) -> str:
    """A file-name-safe form of a constitution / set name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    _plt().close(fig)
    return path


def winrate_heatmap(summary: Summary, models: list[str], constitution: str, prompt_set: str, out: Path) -> Path:
    """Cell (row i, column j): P(model i preferred over model j). Grey where the pair was not compared."""
    plt = _plt()
    present = [m for m in models if any(summary.pair(constitution, prompt_set, m, o) for o in models)]
    grid = [[math.nan if summary.pair(constitution, prompt_set, a, b) is None
             else summary.pair(constitution, prompt_set, a, b).stat.estimate for b in present] for a in present]
    size = 1.2 + 0.75 * len(present)
    fig, ax = plt.subplots(figsize=(size + 1.4, size))
    cmap = plt.get_cmap("RdBu").with_extremes(bad="#dddddd")
    image = ax.imshow(grid, cmap=cmap, vmin=0, vmax=1)
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            if not math.isnan(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if abs(value - 0.5) > 0.3 else "black")
    ax.set_xticks(range(len(present)), present, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(present)), present, fontsize=8)
    ax.set_xlabel("against (column)")
    ax.set_ylabel("model (row)")
    ax.set_title(f"win rate, {prompt_set} prompts, judged under {constitution}", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, out / f"winrate_{safe(constitution)}_{safe(prompt_set)}.png")


def _err(point: float, low: float, high: float) -> tuple[float, float]:
    """Error-bar lengths below / above `point`. Clipped at 0: a bootstrap percentile interval need not contain the
    point estimate (the full-data fit), e.g. with very few prompts, and matplotlib refuses negative lengths."""
    return max(0.0, point - low), max(0.0, high - point)


def _errs(points: list[tuple[float, float, float]]) -> list[list[float]]:
    pairs = [_err(*p) for p in points]
    return [[b for b, _ in pairs], [a for _, a in pairs]]


def elo_bars(summary: Summary, models: list[str], out: Path) -> Path | None:
    """One panel per (constitution, set): Elo per model with its bootstrap 95 % interval."""
    plt = _plt()
    keys = list(summary.elo)
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 0.5 + 0.45 * len(models)), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        scores = summary.elo[key]
        names = [m for m in models if m in scores][::-1]   # first model on top
        values = [scores[m].elo for m in names]
        errors = _errs([(scores[m].elo, scores[m].low, scores[m].high) for m in names])
        ax.errorbar(values, range(len(names)), xerr=errors, fmt="o", capsize=3)
        ax.axvline(1000, color="grey", linewidth=0.8, linestyle=":")
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_xlabel("Elo (95 % interval)")
        ax.set_title(f"{'harmlessness' if key[1] == 'harmful' else 'helpfulness'} — {key[0]} judge", fontsize=9)
    return _save(fig, out / "elo.png")


def helpful_axis(summary: Summary, constitution: str) -> tuple[str, str] | None:
    """The helpfulness Elo to pair with a constitution's harmlessness: its own judge's if it judged the helpful
    set, else the only helpful-set Elo there is (helpfulness is usually judged once)."""
    if (constitution, "helpful") in summary.elo:
        return constitution, "helpful"
    helpful = [k for k in summary.elo if k[1] == "helpful"]
    return helpful[0] if len(helpful) == 1 else None


def harmless_vs_helpful(summary: Summary, models: list[str], constitutions: list[str], out: Path) -> Path | None:
    """The CAI paper's picture: x = helpfulness Elo, y = harmlessness Elo, one labelled point per model."""
    plt = _plt()
    panels = [(c, helpful_axis(summary, c)) for c in constitutions if (c, "harmful") in summary.elo]
    panels = [(c, h) for c, h in panels if h is not None]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.4), squeeze=False)
    for ax, (c, help_key) in zip(axes[0], panels, strict=True):
        harm, helpful = summary.elo[(c, "harmful")], summary.elo[help_key]
        for m in (m for m in models if m in harm and m in helpful):
            x, y = helpful[m], harm[m]
            ax.errorbar(x.elo, y.elo, xerr=_errs([(x.elo, x.low, x.high)]), yerr=_errs([(y.elo, y.low, y.high)]),
                        fmt="o", capsize=3, alpha=0.85)
            ax.annotate(m, (x.elo, y.elo), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xlabel(f"helpfulness Elo ({help_key[0]} judge)")
        ax.set_ylabel(f"harmlessness Elo ({c} judge)")
        ax.set_title(f"harmlessness vs helpfulness — {c}", fontsize=9)
        ax.grid(alpha=0.3)
    return _save(fig, out / "harmless_vs_helpful.png")


def refusal_bars(summary: Summary, models: list[str], out: Path) -> Path | None:
    """Refusal rate per model, one bar per prompt set, with Wilson 95 % intervals."""
    plt = _plt()
    if not summary.refusals:
        return None
    sets = sorted({r.set for r in summary.refusals})
    names = [m for m in models if any(r.model == m for r in summary.refusals)]
    width = 0.8 / len(sets)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(names), 3.6))
    for k, prompt_set in enumerate(sets):
        rows = {r.model: r for r in summary.refusals if r.set == prompt_set}
        xs = [i + (k - (len(sets) - 1) / 2) * width for i, m in enumerate(names) if m in rows]
        present = [rows[m] for m in names if m in rows]
        ax.bar(xs, [r.rate for r in present], width, label=prompt_set,
               yerr=_errs([(r.rate, r.low, r.high) for r in present]), capsize=3)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("refusal rate (Wilson 95 %)")
    ax.legend(fontsize=8)
    return _save(fig, out / "refusals.png")


def all_figures(summary: Summary, models: list[str], constitutions: list[str], out: Path) -> dict[str, Path]:
    """Every figure; the key is the figure's name in the report."""
    figures: dict[str, Path] = {}
    for c, s in sorted({(k[0], k[1]) for k in summary.pairs}, key=lambda k: (k[1], constitutions.index(k[0]))):
        figures[f"win rates: {s} prompts, {c} judge"] = winrate_heatmap(summary, models, c, s, out)
    for name, path in (("Elo per model", elo_bars(summary, models, out)),
                       ("harmlessness vs helpfulness", harmless_vs_helpful(summary, models, constitutions, out)),
                       ("refusal rates", refusal_bars(summary, models, out))):
        if path is not None:
            figures[name] = path
    return figures
