"""The declared search of `compare --tune`: proposals, ranges and choices (no training)."""

import math

import pytest

from regbench.errors import UsageError
from regbench.techniques import parse_setting
from regbench.tune import parse_search_ranges, propose, searches_for


def test_the_same_setting_gets_the_same_distinct_proposals_within_its_range():
    searches = searches_for(parse_setting("dropout+l2"), {})
    assert [s.param.name for s in searches] == ["l2", "rate"]  # input_rate declares no search
    first, again = (propose("dropout+l2", searches, 8, "accuracy").proposals for _ in range(2))
    assert first == again and len(first) == 8
    assert all(1e-6 <= p["l2"] <= 1e-1 and 0 <= p["rate"] <= 0.8 for p in first)
    assert max(p["l2"] for p in first) / min(p["l2"] for p in first) > 1e3  # a log scale spans decades
    patience = propose("early-stopping", searches_for(("early-stopping",), {"patience": (1, 4)}), 4, "accuracy")
    assert sorted(p["patience"] for p in patience.proposals) == [1, 2, 3, 4]  # integers, none twice


def test_the_best_finished_trial_is_chosen_and_diverged_trials_are_not():
    tuning = propose("l2", searches_for(("l2",), {}), 4, "accuracy")
    assert tuning.choose([0.90, math.nan, 0.95, 0.93]) == 2
    lowest = propose("l2", searches_for(("l2",), {}), 3, "crossentropy")
    assert lowest.choose([0.3, 0.2, 0.25]) == 1
    with pytest.raises(UsageError, match="every trial of l2 diverged"):
        propose("l2", searches_for(("l2",), {}), 2, "accuracy").choose([math.nan, math.nan])


@pytest.mark.parametrize("text, message", [
    ("rte=0:0.5", "unknown parameter 'rte'"), ("rate=0.5", "NAME=LO:HI"), ("rate=0.6:0.2", "LO must be below HI"),
    ("l2=0:0.1", "log scale, so LO must be above 0"), ("rate=0:1.5", "allowed 0 <= rate < 1"),
])
def test_bad_search_ranges_are_refused(text, message):
    with pytest.raises(UsageError, match=message):
        parse_search_ranges((text,), [("dropout",), ("l2",)])


def test_a_search_range_replaces_the_declared_one_or_searches_an_undeclared_parameter():
    ranges = parse_search_ranges(("rate=0.1:0.3", "input_rate=0:0.2"), [("dropout",)])
    searches = {s.param.name: (s.low, s.high) for s in searches_for(("dropout",), ranges)}
    assert searches == {"input_rate": (0.0, 0.2), "rate": (0.1, 0.3)}
