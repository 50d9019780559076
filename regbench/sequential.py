"""Sequential seeds: decide each arm's verdict with confidence sequences that hold under optional stopping.

Each arm's paired test-accuracy differences (treated minus baseline, one per seed, in seed order)
feed an anytime-valid confidence sequence for their mean: the sequential t-test of Lindon, Ham,
Tingley and Bojinov (2024, "Anytime-valid linear models and regression adjusted causal inference
in randomized experiments"), as savvi implements it (an intercept-only regression), intersected
over the looks. A sequence at level alpha covers the true mean at every look at once with
probability at least 1 - alpha, so stopping an arm when its sequence decides it, or at any other
time, keeps that guarantee. Each of the m arms gets alpha / m (Bonferroni): with probability at
least 1 - alpha every arm's sequence covers its mean throughout, and then no verdict is wrong:
    helps / hurts      the sequence excludes 0 (negligible: and lies within ±margin as well)
    equivalent         the sequence lies within ±margin (and contains 0)
    undecided          neither, yet: more seeds, up to the maximum
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from regbench.stats import ALPHA
from regbench.verdicts import Kind, Verdict

METHOD = ("anytime-valid confidence sequences for each arm's mean paired difference (the sequential t-test of "
          "Lindon et al. 2024, via savvi), Bonferroni across arms (alpha/m each)")


@dataclass(frozen=True)
class Look:
    """One arm's confidence sequence after its first `pairs` paired seeds, and the verdict it gives."""

    pairs: int
    mean: float
    low: float  # the sequence's bounds so far (its intersection over the looks); -inf/inf while too few pairs
    high: float
    verdict: Verdict


def confidence_sequence(differences: np.ndarray, looks: list[int], alpha: float) -> list[tuple[float, float, float]]:
    """Return, at each look (a count of pairs), the anytime-valid confidence sequence of the differences' mean
    at level `alpha`, intersected over the looks so far, and their mean: (low, high, mean) per look."""
    from savvi.linear_regression import LinearRegression

    model = LinearRegression(alpha=alpha, p=1)
    bounds, seen = [], 0
    for look in looks:
        for difference in differences[seen:look]:
            model.update(np.array([difference, 1.0]))
        seen = look
        with warnings.catch_warnings():  # too few pairs: savvi divides by zero on its way to an infinite bound
            warnings.simplefilter("ignore", RuntimeWarning)
            model.infer()
        bounds.append((float(model.conf_int[0, 0]), float(model.conf_int[0, 1]), float(np.mean(differences[:look]))))
    return bounds


def verdict_of(low: float, high: float, margin: float) -> Verdict:
    """Say what a confidence sequence's bounds decide about an effect whose smallest size that matters is
    `margin` (the accuracy difference: positive helps)."""
    if low > 0:
        return Verdict(Kind.NEGLIGIBLE, Kind.HELPS) if high < margin else Verdict(Kind.HELPS)
    if high < 0:
        return Verdict(Kind.NEGLIGIBLE, Kind.HURTS) if low > -margin else Verdict(Kind.HURTS)
    if -margin < low and high < margin:
        return Verdict(Kind.EQUIVALENT)
    return Verdict(Kind.UNDECIDED)


def analyse(differences: dict[str, np.ndarray], looks: dict[str, list[int]], margin: float,
            alpha: float = ALPHA) -> dict[str, list[Look]]:
    """Return each arm's looks: its confidence sequence at level alpha / (number of arms) after each look (a count
    of its pairs) and the verdict each gives; an arm's verdict stays once its sequence decides it."""
    level = alpha / len(differences)
    analysed = {}
    for arm, values in differences.items():
        sequence, decided = [], None
        for pairs, (low, high, mean) in zip(looks[arm], confidence_sequence(np.asarray(values), looks[arm], level),
                                            strict=True):
            verdict = decided or verdict_of(low, high, margin)  # the first decision stays
            sequence.append(Look(pairs, mean, low, high, verdict))
            decided = verdict if verdict.decided else None
        analysed[arm] = sequence
    return analysed


def seeds_to_decide(mean: float, sd: float, margin: float, alpha: float, start: int, limit: int = 1_000) -> int | None:
    """Return about how many pairs would decide an effect whose mean and SD stay `mean` and `sd`: the fewest (from
    `start`) whose confidence sequence at level `alpha` would exclude 0 or lie within ±margin (None past `limit`)."""
    if not sd > 0:
        return None
    target = max(abs(mean), margin - abs(mean))  # the half-width that decides: helps/hurts, or equivalent

    def decides(pairs: int) -> bool:
        standard = np.random.default_rng(0).standard_normal(pairs)
        differences = mean + sd * (standard - standard.mean()) / standard.std(ddof=1)  # exactly that mean and SD
        low, high, _ = confidence_sequence(differences, [pairs], alpha)[0]
        return (high - low) / 2 < target

    low, high = max(start, 3), max(start, 3)
    while not decides(high):  # the half-width shrinks with the pairs: double, then halve the gap
        if high >= limit:
            return None
        low, high = high, min(2 * high, limit)
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if decides(middle) else (middle + 1, high)
    return high


def next_pairs(latest: dict[str, Look], batch: int, maximum: int) -> dict[str, int]:
    """Return the arms that need more seeds after their latest look, with how many pairs each should have next:
    a batch more, up to the maximum (an undecided arm at the maximum stops there)."""
    return {arm: min(look.pairs + batch, maximum) for arm, look in latest.items()
            if look.verdict.kind is Kind.UNDECIDED and look.pairs < maximum}
