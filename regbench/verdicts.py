"""Verdicts: what the numbers say about an effect, as a kind (an enum) whose wording is made here and only here.

Tables and manifests keep a verdict's text (`str(verdict)`); code that acts on one reads it back with
`Verdict.parse` and looks at its `kind`, never at the words.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class Kind(enum.Enum):
    """What a verdict says about an effect."""

    HELPS = "helps"  # detectably better, and not shown to lie within the margin
    HURTS = "hurts"
    NEGLIGIBLE = "negligible"  # detectable, yet shown to lie within ±margin (its direction says which way)
    EQUIVALENT = "equivalent"  # shown to lie within ±margin
    INCONCLUSIVE = "inconclusive"  # fixed seeds: neither an effect nor its absence shown
    UNDECIDED = "undecided"  # sequential seeds: neither shown when the seeds ran out
    SWITCHED_OFF = "switched off"  # tuning chose the untreated model: its difference is 0 by construction
    CANNOT_TELL = "cannot tell"  # fewer than two pairs
    NOT_SIGNIFICANT = "not significant"  # a metric other than test accuracy
    HIGHER = "higher"
    LOWER = "lower"


DECIDED = frozenset({Kind.HELPS, Kind.HURTS, Kind.NEGLIGIBLE, Kind.EQUIVALENT})
_WITHIN = re.compile(r"within ±(?P<margin>[0-9.e+-]+) pp")


@dataclass(frozen=True)
class Verdict:
    """A verdict: its kind, and what its wording names (a direction, the margin, a correction that undid it)."""

    kind: Kind
    direction: Kind | None = None  # NEGLIGIBLE: HELPS or HURTS
    margin_pp: float | None = None  # NEGLIGIBLE, EQUIVALENT: the margin their fixed-sample wording names
    uncorrected: bool = False  # INCONCLUSIVE: significant before Holm's correction only

    @property
    def decided(self) -> bool:
        """Say whether the numbers decided the effect (an effect shown, or its absence within the margin)."""
        return self.kind in DECIDED

    def __str__(self) -> str:
        within = "" if self.margin_pp is None else f"within ±{self.margin_pp:g} pp"
        if self.kind is Kind.NEGLIGIBLE:
            assert self.direction is not None
            return f"negligible: {self.direction.value}" + (f", {within}" if within else "")
        if self.kind is Kind.EQUIVALENT:
            return "equivalent" + (f" ({within})" if within else "")
        if self.kind is Kind.INCONCLUSIVE and self.uncorrected:
            return "inconclusive (significant only before Holm correction)"
        if self.kind is Kind.SWITCHED_OFF:
            return "switched off: validation prefers none"
        if self.kind is Kind.CANNOT_TELL:
            return "cannot tell (fewer than 2 successful pairs)"
        return self.kind.value

    @classmethod
    def parse(cls, text: str) -> Verdict:
        """Read a verdict back from its text (as `str` wrote it)."""
        within = _WITHIN.search(text)
        margin = float(within["margin"]) if within else None
        if text.startswith("negligible: "):
            return cls(Kind.NEGLIGIBLE, Kind(text.split()[1].rstrip(",")), margin)
        if text.startswith("equivalent"):
            return cls(Kind.EQUIVALENT, margin_pp=margin)
        if text.startswith("inconclusive"):
            return cls(Kind.INCONCLUSIVE, uncorrected=text != "inconclusive")
        if text.startswith("switched off"):
            return cls(Kind.SWITCHED_OFF)
        if text.startswith("cannot tell"):
            return cls(Kind.CANNOT_TELL)
        return cls(Kind(text))


def kind_of(text: str) -> Kind:
    """Return the kind of a verdict's text."""
    return Verdict.parse(text).kind


SWITCHED_OFF = str(Verdict(Kind.SWITCHED_OFF))  # the verdict a report gives an arm whose tuning chose "off"
