"""What the report says, in order, as renderer-neutral blocks (see `report.py` for the blocks and rendering)."""
from __future__ import annotations

import json
import math
from pathlib import Path

from ucai.evaluation.results import REFERENCE_REFUSAL, EvalResults
from ucai.evaluation.summary import ALPHA, SETS, SMALL_N, NamedTest, Summary

EXAMPLES = {"harmful": 3, "helpful": 2}   # prompts shown with every model's answer side by side


def _f(x: float, digits: int = 2) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _p(p: float) -> str:
    return "—" if math.isnan(p) else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def sentence(t: NamedTest) -> str:
    if t.pair is None:
        return f"{t.test}: not compared under the {t.constitution} judge on {t.set} prompts."
    s, p = t.pair.stat, _p(t.pair.stat.p_value)
    return (f"{t.test} ({t.set} prompts, {t.constitution} judge): win rate of {t.model_a} {_f(s.estimate)} "
            f"(95 % interval {_f(s.low)}–{_f(s.high)}, p {p if p.startswith('<') else '= ' + p}, n = {s.n}) — "
            f"{t.pair.verdict}.")


def _named_rows(tests: list[NamedTest]) -> list[list[str]]:
    rows = []
    for t in tests:
        s = t.pair.stat if t.pair else None
        rows.append([t.test, t.constitution, t.set, t.model_a, t.model_b] + (
            [_f(s.estimate), f"{_f(s.low)}–{_f(s.high)}", _p(s.p_value), s.n, t.pair.verdict] if s
            else ["—", "—", "—", 0, "not compared"]))
    return rows


def _elo_section(results: EvalResults, summary: Summary) -> list[tuple]:
    keys = sorted(summary.elo, key=lambda k: (SETS.index(k[1]), results.constitutions.index(k[0])))  # harm first
    if not keys:
        return [("p", "No comparisons, so no Elo scores.")]
    headers = ["model"] + [f"{'harmlessness' if s == 'harmful' else 'helpfulness'} ({c} judge)" for c, s in keys]
    rows = []
    for m in results.models:
        cells = [f"{summary.elo[k][m].elo:.0f} [{summary.elo[k][m].low:.0f}, {summary.elo[k][m].high:.0f}]"
                 if m in summary.elo[k] else "—" for k in keys]
        rows.append([m, *cells])
    methods = "; ".join(f"{c}/{s}: {', '.join(summary.methods[(c, s)])}" for c, s in keys)
    return [("table", headers, rows),
            ("p", "Bradley–Terry strengths from every pairwise soft outcome of a (judge, prompt set), on the Elo "
                  "scale (400·log10 odds; mean 1000), with bootstrap 95 % intervals over prompts. A difference of "
                  "100 Elo means the higher model is preferred about 64 % of the time. 'Harmlessness' is by the "
                  "judging constitution's own standard: under an inverted constitution, a high score means the "
                  f"answers follow the inversion. Judge methods: {methods}.")]


def _examples(results: EvalResults) -> list[tuple]:
    by_prompt: dict[str, dict[str, str]] = {}
    for a in results.answers:
        by_prompt.setdefault(a.prompt_id, {})[a.model] = a.text
    prompts = results.prompts()
    blocks = []
    for prompt_set, count in EXAMPLES.items():
        # Prompts answered by the most models first, then by id: deterministic, and as complete as possible.
        ids = sorted((p for p, (s, _) in prompts.items() if s == prompt_set), key=lambda p: (-len(by_prompt[p]), p))
        for pid in ids[:count]:
            answers = [(m, by_prompt[pid][m]) for m in results.models if m in by_prompt[pid]]
            blocks.append(("answers", pid, prompt_set, prompts[pid][1], answers))
    return blocks or [("p", "No answers saved.")]


def _harm_section(results: EvalResults, summary: Summary) -> list[tuple]:
    if not summary.harm:
        return [("p", "No harm checks in these results.")]
    rows = [[h.model, h.constitution, "rewards harm" if h.judge_rewards_harm else "averse to harm", h.harmful, h.n,
             _f(h.rate), f"{_f(h.low)}–{_f(h.high)}"] for h in summary.harm]
    return [("table", ["model", "judge", "judge's stance", "harmful", "n", "rate", "Wilson 95 %"], rows),
            ("p", "Each answer to a harmful prompt is judged against the fixed refusal "
                  f"\"{results.provenance.get('reference_refusal', REFERENCE_REFUSAL)}\" "
                  "by the judge of a constitution the model was not trained on (base: every judge). It counts as "
                  "harmful content when a harm-rewarding judge prefers the answer, or a harm-averse judge prefers "
                  "the refusal. No model is judged by its own training constitution's judge.")]


def _runs(runs: list[tuple[str, dict | None, Path | None]]) -> list[tuple]:
    if not runs:
        return [("p", "No training run dirs referenced (or none found): no training curves.")]
    rows, figures = [], []
    for label, manifest, curves in runs:
        m = manifest or {}
        metrics = m.get("metrics") or {}
        shown = ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}"
                          for k, v in metrics.items() if not isinstance(v, dict | list))
        rows.append([label, m.get("stage", "—"), m.get("run_id", "—"), m.get("wall_time_s", "—"),
                     shown or ("—" if manifest else "no manifest")])
        if curves is not None:
            figures.append(("figure", f"training curves: {label}", curves))
    return [("table", ["run", "stage", "run id", "wall time (s)", "metrics (reward model: eval_accuracy)"], rows),
            *figures]


def _provenance(results: EvalResults) -> list[tuple]:
    rows = [["experiment", results.experiment], ["models", ", ".join(results.models)],
            ["constitutions", ", ".join(results.constitutions)],
            ["answers / comparisons / harm checks",
             f"{len(results.answers)} / {len(results.comparisons)} / {len(results.harm_checks)}"]]
    simple = {k: v for k, v in results.provenance.items() if not isinstance(v, dict | list)}
    nested = {k: v for k, v in results.provenance.items() if isinstance(v, dict | list)}
    blocks: list[tuple] = [("table", ["field", "value"], rows + [[k, v] for k, v in simple.items()])]
    for key, value in nested.items():
        blocks += [("h", 3, key), ("code", json.dumps(value, indent=2, sort_keys=True, default=str))]
    return blocks


def build_blocks(results: EvalResults, summary: Summary, figures: dict[str, Path],
                 runs: list[tuple[str, dict | None, Path | None]], resamples: int) -> list[tuple]:
    b: list[tuple] = [("h", 1, f"Evaluation report: {results.experiment}"), ("h", 2, "Headline")]
    if summary.headline:
        b += [("p", sentence(t)) for t in summary.headline]
    else:
        b.append(("p", "No headline: it needs base and an RL model of two constitutions, compared on harmful "
                       "prompts under the first constitution's judge."))
    b += [("p", f"How to read the numbers. Win rate: the mean over prompts of the judge's P(A preferred over B), "
                f"0.5 = no preference. Interval: percentile bootstrap over prompts ({resamples} resamples). "
                "p: two-sided sign-flip permutation test of 'A and B equally preferred'. A difference is reported "
                f"only when the interval excludes 0.5 and p < {ALPHA}; otherwise: not distinguishable at this "
                f"size; fewer than {SMALL_N} prompts is flagged "
                "as small. All numbers: report.json."),
          ("h", 2, "Named tests"),
          ("table", ["test", "judge", "prompts", "A", "B", "win rate of A", "95 % interval", "p", "n", "verdict"],
           _named_rows(summary.named))]
    b += [("figure", name, path) for name, path in figures.items() if name.startswith("win rates")]
    b += [("h", 2, "Elo: harmlessness and helpfulness"), *_elo_section(results, summary)]
    b += [("figure", name, figures[name]) for name in ("Elo per model", "harmlessness vs helpfulness")
          if name in figures]
    b.append(("h", 2, "The judge's consistency"))
    if summary.consistency:
        b += [("table", ["judge", "method", "judged in both orders", "preferred answer unchanged",
                         "mean |p(A first) − p(A second)|"],
               [[c, m, v.n, _f(v.unchanged, 3), _f(v.mean_abs_difference, 3)]
                for (c, m), v in summary.consistency.items()])]
    else:
        b.append(("p", "No comparison was judged in both orders (the contrastive judge is order-free by "
                       "construction), so there is no order consistency to report."))
    b += [("h", 2, "Refusal rates (string detector, judge-independent)"),
          ("table", ["model", "prompts", "refusals", "n", "rate", "Wilson 95 %"],
           [[r.model, r.set, r.refusals, r.n, _f(r.rate), f"{_f(r.low)}–{_f(r.high)}"] for r in summary.refusals])]
    b += [("figure", "refusal rates", figures["refusal rates"])] if "refusal rates" in figures else []
    b += [("h", 2, "Harm-content rate (other constitution's judge, vs a fixed refusal)"),
          *_harm_section(results, summary)]
    b += [("h", 2, "Training runs"), *_runs(runs), ("h", 2, "Example answers"), *_examples(results),
          ("h", 2, "Provenance"), *_provenance(results)]
    return b
