"""The evaluation's arithmetic (numpy only, every random draw seeded): win rates with bootstrap intervals and
permutation p-values, Bradley–Terry strengths on the Elo scale, the judge's order consistency, Wilson intervals.

The unit of resampling is always the *prompt*: answers to one prompt are not independent of each other (an easy
prompt makes every model look good), so intervals come from resampling prompts, never single comparisons.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 4000          # bootstrap resamples (≥ 2000 keeps the 2.5 % tails' Monte Carlo error small)
PERMUTATIONS = 20000      # sign-flip draws when exact enumeration is too large
EXACT_UP_TO = 16          # enumerate all 2^n sign patterns up to this n (65 536 rows)
PRIOR_WINS = 0.1          # BT pseudo-wins each way per model pair: finite strengths for a model that always wins
Z95 = 1.959963984540054


@dataclass(frozen=True)
class WinRate:
    estimate: float       # mean over prompts of P(A preferred)
    low: float            # bootstrap 95 % percentile interval over prompts
    high: float
    p_value: float        # two-sided, H0: A and B equally preferred (sign-flip permutation test)
    n: int                # prompts

    def flipped(self) -> WinRate:
        """The same comparison seen from B."""
        return WinRate(1 - self.estimate, 1 - self.high, 1 - self.low, self.p_value, self.n)


def _resample_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of `resamples` bootstrap samples, in chunks so memory stays ~resamples·n/8 floats at most."""
    n, means, chunk = len(values), [], max(1, 2_000_000 // max(1, len(values)))
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        means.append(values[idx].mean(axis=1))
    return np.concatenate(means)


def bootstrap_interval(values: Sequence[float], resamples: int = RESAMPLES, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean. Percentile (not BCa) because win rates live in [0, 1] and the
    percentile interval respects the bounds; at n ≥ 20 its coverage is close to nominal (tested)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    means = _resample_means(v, resamples, np.random.default_rng(seed))
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def sign_flip_p_value(values: Sequence[float], centre: float = 0.5, permutations: int = PERMUTATIONS,
                      seed: int = 0) -> float:
    """Two-sided p-value for "the per-prompt preferences are symmetric about `centre`" (A and B equally preferred).

    Why a sign-flip permutation test and not the bootstrap: under H0 swapping the labels A and B on a prompt turns
    p into 1 − p, so every d = p − ½ is equally likely to carry either sign. Flipping signs therefore draws from
    the exact null distribution of the mean, with no normal approximation and no assumption about the shape of p
    (soft judges give anything from hard 0/1 labels to values hugging ½). It is exact for n ≤ 16 (all 2^n
    patterns enumerated) and Monte Carlo beyond, with the (1 + hits) / (1 + draws) correction so p is never 0.
    A bootstrap p-value (inverting the interval) is less reliable in the small-n tails that matter here.
    """
    d = np.asarray(values, dtype=float) - centre
    n = d.size
    if n == 0:
        return math.nan
    observed = abs(d.mean())
    if observed == 0:
        return 1.0
    tolerance = 1e-12 * max(1.0, observed)  # ties with the observed statistic count as "as extreme"
    if n <= EXACT_UP_TO:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        return float(np.mean(np.abs(signs @ d) / n >= observed - tolerance))
    rng, hits, done = np.random.default_rng(seed), 0, 0
    chunk = max(1, 2_000_000 // n)
    while done < permutations:
        size = min(chunk, permutations - done)
        signs = rng.choice((1.0, -1.0), size=(size, n))
        hits += int(np.sum(np.abs(signs @ d) / n >= observed - tolerance))
        done += size
    return (1 + hits) / (1 + permutations)


def win_rate(p_a: Sequence[float], resamples: int = RESAMPLES, seed: int = 0) -> WinRate:
    """A's win rate over B from one soft preference per prompt (average several judgements of a prompt first)."""
    v = np.asarray(p_a, dtype=float)
    low, high = bootstrap_interval(v, resamples, seed)
    return WinRate(float(v.mean()) if v.size else math.nan, low, high, sign_flip_p_value(v, seed=seed), int(v.size))


def bradley_terry(wins: np.ndarray, prior: float = PRIOR_WINS, tol: float = 1e-10,
                  max_iter: int = 5000) -> np.ndarray:
    """Log-strengths θ from soft win counts by the MM algorithm (Hunter 2004), batched over leading axes.

    wins[..., i, j] = (soft) wins of model i over model j; games are wins + wins^T. `prior` pseudo-wins each way
    for every pair keep θ finite when a model wins (or loses) everything, and tie together models never compared
    directly; it shrinks strengths a little towards equal (negligible at tens of prompts per pair).
    Anchored: mean θ = 0 in every batch row. P(i beats j) = σ(θ_i − θ_j).
    """
    w = np.array(wins, dtype=float)
    k = w.shape[-1]
    off = ~np.eye(k, dtype=bool)
    w = w + prior * off
    games = w + np.swapaxes(w, -1, -2)
    total_wins = w.sum(axis=-1)
    strength = np.ones(w.shape[:-1])
    for _ in range(max_iter):
        denominator = (games / (strength[..., :, None] + strength[..., None, :])).sum(axis=-1)
        updated = total_wins / denominator
        updated /= np.exp(np.log(updated).mean(axis=-1, keepdims=True))  # geometric mean 1: θ anchored at 0
        change = np.max(np.abs(np.log(updated) - np.log(strength)))
        strength = updated
        if change < tol:
            break
    return np.log(strength)


def elo(theta: np.ndarray) -> np.ndarray:
    """Elo scale: 400·log10 of the odds, mean 1000 (θ is natural-log strength with mean 0)."""
    return 1000 + 400 * np.asarray(theta) / math.log(10)


@dataclass(frozen=True)
class EloScore:
    elo: float
    low: float
    high: float
    comparisons: int      # comparisons this model took part in


def fit_elo(models: Sequence[str], outcomes: Sequence[tuple[str, str, str, float]], resamples: int = RESAMPLES,
            seed: int = 0) -> dict[str, EloScore]:
    """Elo per model from (prompt_id, model_a, model_b, p_a) outcomes, with a bootstrap 95 % interval over prompts.

    Each prompt contributes a k×k matrix of soft wins; a bootstrap sample weights the prompts by multinomial counts,
    so every resample refits BT on the same comparisons a rerun on those prompts would have produced."""
    index = {m: i for i, m in enumerate(models)}
    prompts = sorted({o[0] for o in outcomes})
    where = {p: i for i, p in enumerate(prompts)}
    k = len(models)
    per_prompt = np.zeros((len(prompts), k, k))
    played = np.zeros(k, dtype=int)
    for prompt, a, b, p in outcomes:
        i, j = index[a], index[b]
        per_prompt[where[prompt], i, j] += p
        per_prompt[where[prompt], j, i] += 1 - p
        played[[i, j]] += 1
    point = elo(bradley_terry(per_prompt.sum(axis=0)))
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(prompts), np.full(len(prompts), 1 / len(prompts)), size=resamples)
    boot = elo(bradley_terry(np.einsum("bp,pij->bij", counts, per_prompt)))
    low, high = np.quantile(boot, [0.025, 0.975], axis=0)
    return {m: EloScore(float(point[i]), float(low[i]), float(high[i]), int(played[i])) for m, i in index.items()}


@dataclass(frozen=True)
class Consistency:
    n: int                       # comparisons judged in both orders
    unchanged: float             # share whose preferred answer did not flip with the order
    mean_abs_difference: float   # mean |p_a_ab − p_a_ba|


def judge_consistency(pairs: Sequence[tuple[float, float]]) -> Consistency:
    """From (p_a_ab, p_a_ba) per comparison, both P(model_a better). A flip is a strict reversal: one order above ½,
    the other below. A verdict of exactly ½ in one order is no preference, not a reversal."""
    if not pairs:
        return Consistency(0, math.nan, math.nan)
    ab, ba = np.asarray(pairs, dtype=float).T
    flipped = np.sign(ab - 0.5) * np.sign(ba - 0.5) < 0
    return Consistency(len(ab), float(1 - flipped.mean()), float(np.abs(ab - ba).mean()))


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion: unlike the Wald interval it stays inside [0, 1] and keeps
    its coverage at 0 or n successes — common for refusal rates (a base model that never refuses)."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
