"""Choose each technique setting's strength on validation data only: a declared search over tuning runs.

A setting's searched parameters are proposed by Optuna's seeded, scrambled QMC sampler (Sobol),
all before any run trains, so the same command proposes the same trials whatever order they
finish in. Each trial trains on the tuning seeds (disjoint from the evaluation seeds); its score
is the mean validation metric at each run's selected weights; the best score is chosen.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass

import optuna

from regbench.errors import UsageError
from regbench.techniques import Param, compared_params, get_technique

TUNE_METRICS = {"accuracy": "maximize", "crossentropy": "minimize"}  # validation metric -> direction
DEFAULT_TRIALS = 8  # settings tried per technique setting
DEFAULT_TUNE_SEEDS = (1000, 1001)  # tuning seeds: a range of their own, apart from evaluation seeds 0, 1, ...
SIGNIFICANT_DIGITS = 3  # proposals are rounded so that a chosen value can be typed back as --param
MAX_ASKS = 10  # proposals asked per trial at most, to find distinct ones (a small integer range has few)


@dataclass(frozen=True)
class Search:
    """One parameter searched by --tune: its range and scale."""

    param: Param
    low: float
    high: float

    def distribution(self) -> optuna.distributions.BaseDistribution:
        """Return the Optuna distribution that samples this search."""
        if self.param.kind is int:
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.param.scale == "log")
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.param.scale == "log")


@dataclass(frozen=True)
class TuneRequest:
    """The declared budget and rule of a tuned comparison."""

    trials: int = DEFAULT_TRIALS
    seeds: tuple[int, ...] = DEFAULT_TUNE_SEEDS
    metric: str = "accuracy"  # a key of TUNE_METRICS
    ranges: tuple[tuple[str, tuple[float, float]], ...] = ()  # --search NAME=LO:HI overrides


def parse_search_ranges(assignments: tuple[str, ...], settings: list[tuple[str, ...]]) -> dict:
    """Parse `--search NAME=LO:HI` against the compared techniques' parameters; return name -> (low, high)."""
    known = compared_params(settings)
    ranges = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        low_text, colon, high_text = text.partition(":")
        name = name.strip()
        if not sep or not colon:
            raise UsageError(f"--search {assignment!r} is not of the form NAME=LO:HI, e.g. rate=0:0.8")
        if name not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise UsageError(f"--search: unknown parameter {name!r} for the techniques compared; they take: {listed}")
        if name in ranges:
            raise UsageError(f"--search {name} is given twice; give each parameter once")
        param = known[name]
        low, high = param.parse(low_text.strip()), param.parse(high_text.strip())
        if low >= high:
            raise UsageError(f"--search {assignment}: LO must be below HI")
        if param.scale == "log" and low <= 0:
            raise UsageError(f"--search {assignment}: {name} is searched on a log scale, so LO must be above 0")
        ranges[name] = (low, high)
    return ranges


def searches_for(setting: tuple[str, ...], ranges: dict) -> list[Search]:
    """Return the searches of a setting: every parameter with a declared range or a --search range, by name."""
    params = sorted((param for name in setting for param in get_technique(name).params), key=lambda p: p.name)
    return [Search(param, *ranges.get(param.name, param.search)) for param in params
            if param.name in ranges or param.search is not None]


def _rounded(value: float, kind: type) -> float:
    """Round a proposal to SIGNIFICANT_DIGITS (integers stay integers)."""
    if kind is int:
        return int(value)
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}") if value else 0.0


@dataclass
class Tuning:
    """One setting's search: its Optuna study, the proposed parameter values per trial, and later its choice."""

    setting: str
    searches: list[Search]
    study: optuna.Study
    trials: list[optuna.trial.Trial]
    proposals: list[dict]  # trial number -> searched parameter values

    def choose(self, scores: list[float]) -> int:
        """Tell the study each trial's score (NaN: every run of it diverged); return the chosen trial's number."""
        for trial, score in zip(self.trials, scores):
            if math.isfinite(score):
                self.study.tell(trial, score)
            else:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        finished = [t for t in self.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not finished:
            raise UsageError(f"--tune: every trial of {self.setting} diverged; narrow its search with --search")
        return self.study.best_trial.number


def propose(setting: str, searches: list[Search], trials: int, metric: str) -> Tuning:
    """Propose `trials` settings of `setting` from a sampler seeded by the setting's name (the same every time)."""
    seed = int(hashlib.sha256(setting.encode()).hexdigest()[:8], 16)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    sampler = optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed, warn_independent_sampling=False)
    study = optuna.create_study(direction=TUNE_METRICS[metric], sampler=sampler)
    distributions = {search.param.name: search.distribution() for search in searches}
    asked, proposals = [], []
    for _ in range(MAX_ASKS * trials):  # a proposal that rounds to an earlier one (integers) is asked again
        trial = study.ask(distributions)
        proposal = {search.param.name: _rounded(trial.params[search.param.name], search.param.kind)
                    for search in searches}
        if proposal in proposals:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        asked.append(trial)
        proposals.append(proposal)
        if len(proposals) == trials:
            break
    return Tuning(setting, searches, study, asked, proposals)

