"""Choose each arm's values on validation data only: a multi-fidelity search, then a race among the best.

1. Proposals. Optuna's seeded, scrambled QMC sampler (Sobol) proposes every trial of a setting
   before any run trains, so the same command proposes the same trials whatever order they finish
   in. A trial's values are the technique's searched parameters and the shared training options of
   `--tune-shared` (the learning rate, ...); the baseline searches the shared options alone, in the
   same budget, so both sides of every pair are at their validated best.
2. Successive halving. Every trial trains the first 1/16 of its epochs on the tuning seeds; Optuna's
   SuccessiveHalvingPruner (Jamieson & Talwalkar 2016; Li et al. 2020, asynchronous successive
   halving), told each trial's mean validation score in trial order, keeps the promising ones for
   1/4 of the epochs, and those it keeps again for the whole run. A trial's decision depends on its
   own score and those of earlier trials only, so it is the same on every path and on resume. A
   rung's runs are partial runs (their own run ids and status), never reused as finished ones.
3. A race (Birattari et al. 2002, F-Race; here the paired t-test race of irace, López-Ibáñez et al.
   2016). The best finished trials and "off" (the untreated model: the baseline as tuned) train on
   more tuning seeds, one seed per round; a candidate whose paired validation deficit to the leader
   is significant (one-sided t-test, RACE_ALPHA) drops out, until one is left or the seed limit is
   reached ("chosen within noise"). Off wins ties.

Only validation numbers are read; the test set is never looked at.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import optuna
import pandas as pd
from scipy import stats as scipy_stats

from regbench import stats
from regbench.config import DEFAULT_RACE_SEEDS, DEFAULT_TRIALS, DEFAULT_TUNE_SEEDS, TUNE_METRICS, RunConfig
from regbench.errors import UsageError
from regbench.outputs import Manifest
from regbench.techniques import (
    BASELINE,
    Param,
    compared_params,
    describe_params,
    get_technique,
    given_values,
    technique_of,
)

SIGNIFICANT_DIGITS = 3  # proposals are rounded so that a chosen value can be typed back as --param
SAMPLER = "Optuna's QMCSampler (scrambled Sobol sequence, seeded by the setting's name)"
MAX_ASKS = 10  # proposals asked per trial at most, to find distinct ones (a small integer range has few)
REDUCTION = 4  # successive halving keeps about 1 in REDUCTION trials at each rung
RUNG_FRACTIONS = (1 / 16, 1 / 4, 1.0)  # the share of a trial's epochs trained at each rung (REDUCTION apart)
PRUNER = (f"Optuna's SuccessiveHalvingPruner (reduction factor {REDUCTION}; rungs at "
          f"{', '.join(f'1/{round(1 / fraction)}' for fraction in RUNG_FRACTIONS[:-1])} and all of each trial's "
          "epochs), told each trial's mean validation score over the tuning seeds in trial order")
RACE_ENTRANTS = 3  # the best finished trials that race (with off)
RACE_ALPHA = 0.05  # a candidate drops out of the race when its paired deficit to the leader is significant at this
RACE_RULE = (f"the {RACE_ENTRANTS} best finished trials and off train on one more tuning seed per round; a "
             f"candidate drops out when a one-sided paired t-test puts it behind the leader at p < {RACE_ALPHA}, "
             "or when it scores exactly as the leader on every seed (the same model there)")
SHARED_OPTIONS = {  # --tune-shared NAME -> the run setting it searches, its type and scale
    "lr": ("lr", float, "log"), "batch-size": ("batch_size", int, "log"), "epochs": ("epochs", int, "linear")}
REPEAT_STRIDE = 100  # --tune-repeats: repeat r tunes on the tuning seeds + 100 r (a race may use up to 100 seeds)
OFF = -1  # the trial number of "off" (the untreated model) in records and tuning.csv


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
    shared: tuple[str, ...] = ()  # --tune-shared: RunConfig fields searched for every arm and the baseline
    race_seeds: int = DEFAULT_RACE_SEEDS  # tuning seeds a racing candidate may train on at most
    repeats: int = 1  # --tune-repeats: independent searches, each evaluated on the evaluation seeds
    repeat: int = 0  # which of them this is: its tuning seeds are REPEAT_STRIDE * repeat above the first's

    def repeated(self, repeat: int) -> TuneRequest:
        """Return repeat number `repeat` of this search: its own tuning seeds and proposals."""
        return replace(self, repeat=repeat, seeds=tuple(seed + REPEAT_STRIDE * repeat for seed in self.seeds))


def race_seed_list(request: TuneRequest) -> tuple[int, ...]:
    """Return the tuning seeds a race may use: the tuning seeds, then the next ones upward, up to the limit."""
    seeds = list(request.seeds)
    while len(seeds) < request.race_seeds:
        seeds.append(max(seeds) + 1)
    return tuple(seeds)


def shared_params(base: RunConfig, names: tuple[str, ...]) -> dict[str, Param]:
    """Return the shared options `names` (RunConfig fields) as searched parameters, with ranges around `base`: the
    learning rate from a tenth to ten times, the batch size from a quarter to eight times (at most the training
    images), the epochs from a quarter to all of them."""
    ranges = {"lr": (base.lr / 10, base.lr * 10),
              "batch_size": (max(1, base.batch_size // 4), min(base.train_size, base.batch_size * 8)),
              "epochs": (max(1, base.epochs // 4), base.epochs)}
    params = {}
    for flag, (name, kind, scale) in SHARED_OPTIONS.items():
        if name in names:
            params[name] = Param(name, kind, getattr(base, name), 1 if kind is int else 0.0,
                                 low_inclusive=kind is int, help=f"--{flag}, searched for every arm",
                                 scale=scale, search=ranges[name])
    return params


def parse_shared(text: str | None) -> tuple[str, ...]:
    """Parse `--tune-shared lr,batch-size` into RunConfig field names; an unknown name is a UsageError."""
    if not text:
        return ()
    names = [name.strip() for name in text.split(",")]
    for name in names:
        if name not in SHARED_OPTIONS:
            raise UsageError(f"--tune-shared: {name!r} cannot be searched; choose from {', '.join(SHARED_OPTIONS)}")
    if len(set(names)) != len(names):
        raise UsageError(f"--tune-shared {text}: names an option twice")
    return tuple(SHARED_OPTIONS[name][0] for name in names)


def parse_search_ranges(assignments: tuple[str, ...], settings: list[tuple[str, ...]],
                        shared: dict[str, Param] | None = None) -> dict:
    """Parse `--search NAME=LO:HI` against the compared techniques' parameters and the shared options searched;
    return name -> (low, high)."""
    known = {**compared_params(settings), **(shared or {})}
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


def searches_for(setting: tuple[str, ...], ranges: dict, given: dict | None = None,
                 shared: dict[str, Param] | None = None) -> list[Search]:
    """Return the searches of a setting: every parameter with a declared range or a --search range, by name,
    but those its arm gives a value of (TECHNIQUE:NAME=VALUE), which stay as given; then the shared options."""
    params = sorted((param for name in setting for param in get_technique(name).params), key=lambda p: p.name)
    own = [Search(param, *_range(param, ranges)) for param in params
           if (param.name in ranges or param.search is not None) and param.name not in (given or {})]
    return own + [Search(param, *_range(param, ranges)) for param in (shared or {}).values()]


def _range(param: Param, ranges: dict) -> tuple[float, float]:
    """Return the range `param` is searched over: its --search range, else its declared one."""
    bounds = ranges.get(param.name, param.search)
    assert bounds is not None, param.name  # searches_for searches only parameters with a range
    return bounds


def _rounded(value: float, kind: type) -> float:
    """Round a proposal to SIGNIFICANT_DIGITS (integers stay integers)."""
    if kind is int:
        return int(value)
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}") if value else 0.0


@dataclass(frozen=True)
class Candidate:
    """One setting's values to try: a trial's proposal, or off (the untreated model, as the baseline was tuned)."""

    setting: str  # the arm's label ('none' for the baseline's own trials)
    number: int  # the trial's number, as tuning.csv numbers them; OFF for the untreated model
    technique: str  # the technique setting its runs train ('none' for off)
    params: tuple[tuple[str, float], ...]  # the technique's values, all of them, sorted by name
    shared: tuple[tuple[str, float], ...] = ()  # the shared options' values, e.g. (("lr", 0.002),)

    def config(self, base: RunConfig, seed: int, fraction: float = 1.0) -> RunConfig:
        """Return this candidate's run on `seed`, trained for `fraction` of its epochs (a partial run below 1)."""
        shared: dict[str, Any] = dict(self.shared)
        config = replace(base, technique=self.technique, technique_params=self.params, seed=seed, **shared)
        stop = max(1, round(config.epochs * fraction))
        return replace(config, stop_epoch=stop if stop < config.epochs else 0)

    def values(self) -> dict:
        """Return the technique's and the shared options' values together."""
        return {**dict(self.params), **dict(self.shared)}


def propose(setting: str, searches: list[Search], trials: int, metric: str,
            repeat: int = 0) -> tuple[optuna.Study, list, list[dict]]:
    """Ask a study seeded by the setting's name (and the search's repeat, after the first) for `trials` distinct
    proposals (the same every time); return the study (with Optuna's successive-halving pruner), its trials and
    their rounded values."""
    seed = int(hashlib.sha256((setting + (f"#{repeat}" if repeat else "")).encode()).hexdigest()[:8], 16)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    sampler = optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed, warn_independent_sampling=False)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=REDUCTION,
                                                    min_early_stopping_rate=0)
    study = optuna.create_study(direction=TUNE_METRICS[metric], sampler=sampler, pruner=pruner)
    distributions = {search.param.name: search.distribution() for search in searches}
    asked, proposals = [], []
    for _ in range(MAX_ASKS * trials):  # a proposal that rounds to an earlier one (integers) is asked again
        trial = study.ask(distributions)
        proposal = {search.param.name: _rounded(trial.params[search.param.name], search.param.kind)
                    for search in searches}
        if proposal in proposals:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        asked.append(trial)
        proposals.append(proposal)
        if len(proposals) == trials:
            break
    return study, asked, proposals


@dataclass
class SettingSearch:
    """One setting's search: its declared searches and its trials (the proposals as candidates)."""

    setting: str
    technique: str
    searches: list[Search]
    values: dict  # the setting's values as given (its parameters not searched keep these)
    shared_names: tuple[str, ...]
    trials: list[Candidate] = field(default_factory=list)

    def candidate(self, number: int, proposal: dict) -> Candidate:
        """Return trial `number` of `proposal`: its technique values (the others as given) and shared values."""
        params = {**self.values, **{k: v for k, v in proposal.items() if k not in self.shared_names}}
        shared = tuple((name, proposal[name]) for name in self.shared_names if name in proposal)
        return Candidate(self.setting, number, self.technique, tuple(sorted(params.items())), shared)


@dataclass
class Choice:
    """What a setting's search chose, with the race that decided it."""

    candidate: Candidate
    score: float  # its mean validation score over the seeds it raced on
    seeds: int  # tuning seeds it trained on
    decided: bool  # the race left it alone (False: chosen within noise, at the seed limit)
    runner_up: Candidate | None
    lead_runner_up: tuple[float, float] | None  # (mean paired lead, its standard error) over the runner-up
    lead_baseline: tuple[float, float] | None  # the same over the baseline as tuned (None: it is the baseline)
    trial_scores: dict[int, float | None]  # trial -> mean full-budget score on the first tuning seeds (None: pruned)
    pruned_at: dict[int, int]  # trial -> the rung (epochs) it was pruned at
    raced: list[int]  # the trials (and OFF) that raced


class Replay:
    """Replays every search from the runs stored so far: either the runs needed next, or every choice.

    Each replay recomputes every decision from the stored numbers, so a killed tune resumes with the
    same choices, and any executor trains the same runs.
    """

    def __init__(self, plan: TunePlan, rows: dict[str, pd.Series]):
        self.plan, self.rows = plan, rows
        self.needed: dict[str, RunConfig] = {}
        self.looked_up: dict[str, tuple[Candidate, RunConfig]] = {}

    def score(self, candidate: Candidate, seeds, fraction: float = 1.0) -> list[float] | None:
        """Return the candidate's validation score on each of `seeds` at `fraction` of its epochs (NaN: diverged),
        or None while some of those runs are not stored (they are added to the runs needed)."""
        values = []
        for seed in seeds:
            config = candidate.config(self.plan.base, seed, fraction)
            self.looked_up[config.run_id] = candidate, config
            row = self.rows.get(config.run_id)
            if row is None:
                self.needed[config.run_id] = config
                continue
            values.append(row[self.plan.column] if row["status"] in ("ok", "partial") else math.nan)
        return None if len(values) < len(seeds) else values

    def search(self, search: SettingSearch, with_off: bool = True) -> Choice | None:
        """Replay one setting's successive halving and race (with off, the baseline as tuned, unless `with_off` is
        False); return its choice, or None while runs are needed (or the baseline is not chosen yet)."""
        request = self.plan.request
        study, trials, _ = propose(search.setting, search.searches, request.trials, request.metric, request.repeat)
        alive, pruned_at, full = list(range(len(trials))), {}, {}
        for rung, fraction in enumerate(RUNG_FRACTIONS):
            scored = {index: self.score(search.trials[index], request.seeds, fraction) for index in alive}
            scores = {index: values for index, values in scored.items() if values is not None}
            if len(scores) < len(scored):
                return None
            for index in list(alive):
                mean = float(np.mean(scores[index]))
                if fraction == 1.0:
                    full[index] = mean
                    study.tell(trials[index], mean if math.isfinite(mean) else None,
                               state=None if math.isfinite(mean) else optuna.trial.TrialState.FAIL)
                    continue
                trials[index].report(mean, step=REDUCTION ** rung)
                if trials[index].should_prune():
                    study.tell(trials[index], state=optuna.trial.TrialState.PRUNED)
                    alive.remove(index)
                    pruned_at[index] = search.trials[index].config(self.plan.base, 0, fraction).stop_epoch
        finished = sorted((index for index in alive if math.isfinite(full[index])),
                          key=lambda index: (-self.plan.sign * full[index], index))
        if with_off and self.plan.baseline_choice is None:
            return None  # the race needs off, the baseline as tuned
        off = self.plan.off(search.setting) if with_off else None
        if not finished and off is None:
            raise UsageError(f"--tune: every trial of {search.setting} diverged; narrow its search with --search")
        entrants = [search.trials[index] for index in finished[:RACE_ENTRANTS]] + ([off] if off else [])
        race = self.race(entrants)
        if race is None:
            return None
        winner, seeds, survivors, means = race
        others = sorted((c for c in entrants if c is not winner), key=lambda c: (self.rank(means[c]), c.number))
        runner_up = others[0] if others else None
        lead_baseline = None if winner is off or self.plan.baseline_choice is None else \
            self.lead(winner, self.plan.baseline_choice.candidate, seeds)
        return Choice(winner, means[winner], seeds, len(survivors) == 1, runner_up,
                      self.lead(winner, runner_up, seeds) if runner_up else None, lead_baseline,
                      {index: full.get(index) for index in range(len(trials))}, pruned_at,
                      [c.number for c in entrants])

    def race(self, entrants: list[Candidate]):
        """Race `entrants` on one more tuning seed per round; return (winner, its seeds, the survivors, each
        entrant's mean on the seeds it raced) or None while runs are needed."""
        seeds = list(self.plan.race_seeds)
        alive, count, means = list(entrants), len(self.plan.request.seeds), {}
        while True:
            scored = {candidate: self.score(candidate, seeds[:count]) for candidate in alive}
            scores = {candidate: values for candidate, values in scored.items() if values is not None}
            if len(scores) < len(scored):
                return None
            for candidate, values in scores.items():
                means[candidate] = float(np.mean(values))
            ranked = sorted(alive, key=lambda c: (self.rank(means[c]), c.number != OFF, c.number))
            leader = ranked[0]
            alive = [leader] + [c for c in ranked[1:] if not self.behind(scores[leader], scores[c])]
            if len(alive) == 1 or count == len(seeds):
                return leader, count, alive, means
            count += 1

    def rank(self, score: float) -> float:
        """Return a sort key that puts better scores first and diverged (NaN) ones last."""
        return math.inf if math.isnan(score) else -self.plan.sign * score

    def behind(self, leader: list[float], other: list[float]) -> bool:
        """Whether `other` is significantly behind `leader` on their paired seeds (one-sided paired t-test)."""
        deficit = self.plan.sign * (np.array(leader) - np.array(other))
        if not np.isfinite(deficit).all():
            return bool(np.isnan(other).any())
        if np.all(deficit == deficit[0]):  # no spread: behind when the gap is positive; at 0 the two are the same
            return bool(deficit[0] >= 0)  # model on these seeds (e.g. a max-norm that never binds), not rivals
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return bool(scipy_stats.ttest_1samp(deficit, 0.0, alternative="greater").pvalue < RACE_ALPHA)

    def lead(self, winner: Candidate, other: Candidate, seeds: int) -> tuple[float, float] | None:
        """Return the winner's mean paired lead over `other` (in the metric's better direction) and its standard
        error, on the tuning seeds both trained on (None if fewer than two)."""
        common = 0
        for count in range(seeds, 0, -1):
            if all(candidate.config(self.plan.base, seed).run_id in self.rows
                   for candidate in (winner, other) for seed in self.plan.race_seeds[:count]):
                common = count
                break
        if common < 1:
            return None
        winner_scores, other_scores = (np.array(self.score(c, self.plan.race_seeds[:common])) for c in (winner, other))
        lead = self.plan.sign * (winner_scores - other_scores)
        se = float(np.std(lead, ddof=1) / math.sqrt(common)) if common > 1 else math.nan
        return float(np.mean(lead)), se


@dataclass
class TunePlan:
    """The searches of a comparison: the baseline's (over the shared options, if any) and every tuned setting's."""

    request: TuneRequest
    base: RunConfig
    settings: tuple[tuple[str, tuple], ...]  # the compared settings with their values as given
    searches: dict[str, SettingSearch]  # tuned setting -> its search
    baseline: SettingSearch | None  # the baseline's search over the shared options (None: nothing shared)
    untuned: list[str]  # settings with nothing to search (e.g. batchnorm): compared at their values as given
    baseline_choice: Choice | None = None

    @property
    def column(self) -> str:
        return f"val_{self.request.metric}"

    @property
    def sign(self) -> int:
        """+1 where a higher score is better (accuracy), -1 where lower is (cross-entropy)."""
        return 1 if TUNE_METRICS[self.request.metric] == "maximize" else -1

    @property
    def race_seeds(self) -> tuple[int, ...]:
        return race_seed_list(self.request)

    def baseline_candidate(self) -> Candidate:
        """Return the baseline as given (the only candidate when no option is shared)."""
        return Candidate(BASELINE, 0, BASELINE, ())

    def off(self, name: str) -> Candidate | None:
        """Return setting `name`'s "off": the untreated model as the baseline was tuned (None if it has no
        untreated form, e.g. batchnorm)."""
        offs = [get_technique(technique).off_values() for technique in technique_of(name).split("+")]
        if any(values is None for values in offs) or self.baseline_choice is None:
            return None
        chosen = self.baseline_choice.candidate
        return Candidate(name, OFF, BASELINE, (), chosen.shared)

    def replay(self, rows: dict[str, pd.Series]) -> tuple[Replay, dict[str, Choice] | None]:
        """Replay every search from `rows` (run id -> its stored row, at the selected weights); return the replay
        (its `needed` runs) and the choices, or None while runs are needed."""
        replay = Replay(self, rows)
        if self.baseline is None:
            scores = replay.score(self.baseline_candidate(), self.request.seeds)
            self.baseline_choice = None if scores is None else Choice(
                self.baseline_candidate(), float(np.mean(scores)), len(scores), True, None, None, None, {}, {}, [])
        else:
            self.baseline_choice = replay.search(self.baseline, with_off=False)
        searched = {name: replay.search(search) for name, search in self.searches.items()}
        choices = {name: choice for name, choice in searched.items() if choice is not None}
        if replay.needed or self.baseline_choice is None or len(choices) < len(searched):
            return replay, None
        return replay, choices

    def first_configs(self) -> list[RunConfig]:
        """Return the runs the search trains first (every trial's first rung and the baseline), for a dry run."""
        replay, _ = self.replay({})
        return list(replay.needed.values())

    def record(self) -> dict:
        """Return what a tuned comparison fixes before it trains (the manifest's "tune"): budget, metric, sampler,
        pruner, race and every setting's searches (name -> low, high, scale) and its values not searched."""
        def described(search: SettingSearch) -> dict:
            return {s.param.name: {"low": s.low, "high": s.high, "scale": s.param.scale,
                                   "integer": s.param.kind is int} for s in search.searches}

        searches = {name: described(search) for name, search in self.searches.items()}
        fixed = {name: {param: value for param, value in params if param not in searches.get(name, {})}
                 for name, params in self.settings}
        return {"trials": self.request.trials, "seeds": list(self.request.seeds), "metric": self.request.metric,
                "sampler": SAMPLER, "pruner": PRUNER, "race": RACE_RULE, "race_seeds": list(self.race_seeds),
                "shared": list(self.request.shared), "repeats": self.request.repeats,
                "baseline_searches": described(self.baseline) if self.baseline else {},
                "searches": searches, "fixed": fixed, "untuned": self.untuned}


def plan_tuning(settings: tuple[tuple[str, tuple], ...], base: RunConfig, request: TuneRequest) -> TunePlan:
    """Propose every search's trials (nothing trains here)."""
    ranges, shared = dict(request.ranges), shared_params(base, request.shared)
    searches, untuned = {}, []

    def search_of(name: str, values: dict) -> SettingSearch | None:
        technique = technique_of(name)
        found = searches_for(tuple(technique.split("+")), ranges, given_values(name) if name != BASELINE else {},
                             shared)
        if not found:
            return None
        search = SettingSearch(name, technique, found, values, tuple(shared))
        _, _, proposals = propose(name, found, request.trials, request.metric, request.repeat)
        search.trials = [search.candidate(number, proposal) for number, proposal in enumerate(proposals)]
        return search

    for name, params in settings:
        search = search_of(name, dict(params))
        if search is None:
            untuned.append(name)
        else:
            searches[name] = search
    baseline = search_of(BASELINE, {}) if shared else None
    return TunePlan(request, base, settings, searches, baseline, untuned)


@dataclass(frozen=True)
class TuneOutcome:
    """What tuning chose: every setting's values and shared options, a table of the tuning runs, and the record."""

    settings: tuple[tuple[str, tuple], ...]  # the compared settings with their chosen values
    shared: dict[str, tuple]  # setting (and 'none') -> its chosen shared options, e.g. (("lr", 0.002),)
    table: pd.DataFrame  # a row per tuning run (tuning.csv)
    record: dict  # the manifest's "tuned": every trial's values and score, and the choices


def search_all(plans: list[TunePlan], train: Callable[[list[RunConfig]], pd.DataFrame], select: str,
               on_stage: Callable[[int, list[RunConfig]], None] | None = None) -> tuple[list[TuneOutcome], int]:
    """Drive every plan's search to its choices: replay them all from the runs stored so far, have `train` train and
    return (as a runs table) what they ask for next, stage by stage; return each plan's outcome and how many tuning
    runs the searches read. `on_stage(stage, configs)` hears of each stage before it trains."""
    rows: dict[str, pd.Series] = {}
    stage = 0
    while True:
        replays = [plan.replay(rows) for plan in plans]
        todo = list({run_id: config for replay, _ in replays for run_id, config in replay.needed.items()}.values())
        if not todo:
            return ([outcome(plan, replay, choices) for plan, (replay, choices) in zip(plans, replays, strict=True)],
                    len({run_id for replay, _ in replays for run_id in replay.looked_up}))
        stage += 1
        if on_stage:
            on_stage(stage, todo)
        rows.update(rows_of(train(todo), select))


def rows_of(runs: pd.DataFrame, select: str) -> dict[str, pd.Series]:
    """Return stored tuning runs by run id, measured at their `select`ed weights (validation numbers only are read)."""
    return {run_id: row for run_id, row in stats.selected(runs, select).set_index("run_id").iterrows()}


def outcome(plan: TunePlan, replay: Replay, choices: dict[str, Choice] | None) -> TuneOutcome:
    """Gather the choices of a finished replay: the chosen values (off: the technique at its untreated values,
    which trains bit for bit as the baseline), the tuning table and the manifest's record."""
    baseline = plan.baseline_choice
    assert baseline is not None and choices is not None  # a replay that needs no more runs has decided every search
    chosen_settings, shared = [], {BASELINE: baseline.candidate.shared}
    for name, params in plan.settings:
        choice = choices.get(name)
        if choice is None:
            chosen_settings.append((name, params))
            continue
        values = choice.candidate.values() if choice.candidate.number != OFF else {**dict(params), **_off_values(name)}
        chosen_settings.append((name, tuple(sorted((k, v) for k, v in values.items() if k not in plan.request.shared))))
        shared[name] = choice.candidate.shared
    record: dict[str, Any] = {"baseline_score": baseline.score,
              "baseline": _choice_record(baseline, plan.baseline) if plan.baseline else None,
              "chosen": {name: _choice_record(choice, plan.searches[name]) for name, choice in choices.items()},
              "trials": {name: _trials_record(plan.searches[name], choice) for name, choice in choices.items()}}
    if plan.baseline:
        record["trials"][BASELINE] = _trials_record(plan.baseline, baseline)
    return TuneOutcome(tuple(chosen_settings), shared, _table(plan, replay, choices), record)


def _off_values(name: str) -> dict:
    """Return the values that switch every technique of arm `name` off (each has an untreated form)."""
    return {param: value for technique in technique_of(name).split("+")
            for param, value in (get_technique(technique).off_values() or {}).items()}


def _choice_record(choice: Choice, search: SettingSearch) -> dict:
    """Return a choice as the manifest records it (`searched`: its values of the searched parameters)."""
    def lead(value):
        return None if value is None else {"mean": value[0], "se": None if math.isnan(value[1]) else value[1]}

    candidate = choice.candidate
    return {"trial": candidate.number, "off": candidate.number == OFF,
            "params": {k: v for k, v in candidate.params}, "shared": dict(candidate.shared),
            "searched": {s.param.name: candidate.values().get(s.param.name) for s in search.searches},
            "score": choice.score, "seeds": choice.seeds, "decided": choice.decided,
            "runner_up": None if choice.runner_up is None else choice.runner_up.number,
            "lead_runner_up": lead(choice.lead_runner_up), "lead_baseline": lead(choice.lead_baseline),
            "raced": choice.raced}


def _trials_record(search: SettingSearch, choice: Choice) -> list[dict]:
    """Return every trial of a search: its values, its full-budget score (None: pruned or diverged) and the rung
    (epochs) it was pruned at."""
    return [{"params": candidate.values(), "score": choice.trial_scores.get(candidate.number),
             "pruned_at": choice.pruned_at.get(candidate.number)} for candidate in search.trials]


def _table(plan: TunePlan, replay: Replay, choices: dict[str, Choice]) -> pd.DataFrame:
    """Return tuning.csv: a row per tuning run the searches read (partial rungs and race seeds included)."""
    baseline = plan.baseline_choice
    assert baseline is not None  # the searches are decided
    chosen = {(c.candidate.setting if c.candidate.number != OFF else BASELINE, c.candidate.number, c.candidate.shared)
              for c in [*choices.values(), baseline]}
    rows = []
    for run_id, (candidate, config) in replay.looked_up.items():
        row = replay.rows[run_id]
        setting = BASELINE if candidate.number == OFF else candidate.setting
        number: int | None = baseline.candidate.number if candidate.number == OFF else candidate.number
        if candidate.number == OFF and plan.baseline is None:
            number = None
        rows.append({"setting": setting, "trial": None if setting == BASELINE and plan.baseline is None else number,
                     "seed": config.seed, "epochs_trained": config.stop_epoch or config.epochs, "run_id": run_id,
                     "params": " ".join(f"{name}={value:g}" for name, value in candidate.values().items()),
                     **{f"param_{name}": value for name, value in candidate.values().items()},
                     "status": row["status"], "val_accuracy": row["val_accuracy"],
                     "val_crossentropy": row["val_crossentropy"], "best_val_epoch": row["best_val_epoch"],
                     "chosen": (setting, candidate.number if candidate.number != OFF else
                                baseline.candidate.number, candidate.shared) in chosen
                               and not config.stop_epoch})
    table = pd.DataFrame(rows).drop_duplicates("run_id")
    table = table.sort_values(["setting", "trial", "epochs_trained", "seed"], key=_setting_order(plan),
                              na_position="first")
    return table.astype({"trial": "Int64"}).reset_index(drop=True)


def _setting_order(plan: TunePlan):
    """Return a sort key that puts the baseline first, then the settings in the order compared."""
    order = {name: index for index, name in enumerate([BASELINE, *plan.searches])}

    def key(column: pd.Series) -> pd.Series:
        return column.map(order) if column.name == "setting" else column

    return key


def rederive(manifest: Manifest, tuning: pd.DataFrame) -> tuple[dict, list[str]]:
    """Replay a tuned comparison's searches from its tuning.csv and manifest alone; return each setting's choice as
    recorded (setting -> its record, 'none' for the baseline when it was searched) and the problems found (runs
    the replay asks for that tuning.csv lacks)."""
    from regbench.config import with_added_defaults

    tune = manifest["tune"]
    assert tune is not None  # a tuned comparison
    recorded = with_added_defaults(manifest["config"])  # its identity, which may carry keys that are not fields
    values = {spec.name: recorded[spec.name] for spec in fields(RunConfig) if spec.name in recorded}
    values["hidden"] = tuple(values["hidden"])
    base = RunConfig(**values)
    ranges = {name: (search["low"], search["high"]) for searches in [tune.get("baseline_searches", {}),
                                                                     *tune["searches"].values()]
              for name, search in searches.items()}
    request = TuneRequest(trials=tune["trials"], seeds=tuple(tune["seeds"]), metric=tune["metric"],
                          ranges=tuple(sorted(ranges.items())), shared=tuple(tune.get("shared", [])),
                          race_seeds=len(tune.get("race_seeds", tune["seeds"])))
    settings = tuple((name, tuple(sorted(fixed.items()))) for name, fixed in tune["fixed"].items())
    plan = plan_tuning(settings, base, request)
    rows = {row["run_id"]: row for _, row in tuning.iterrows()}
    replay, choices = plan.replay(rows)
    if choices is None:
        return {}, [f"tuning.csv: lacks {len(replay.needed)} tuning run(s) the search reads, e.g. "
                    f"{next(iter(replay.needed))}"]
    record = outcome(plan, replay, choices).record
    return {**record["chosen"], **({BASELINE: record["baseline"]} if record["baseline"] else {})}, []


def describe_choice(name: str, record: dict, metric: str) -> str:
    """Say in one line what tuning chose for a setting and how clearly."""
    if record["off"]:
        what = f"off (validation prefers no {name} at this budget)"
    else:
        what = f"{describe_params(record['searched'])} (trial {record['trial']})"
    lead = record["lead_runner_up"]
    margin = "" if lead is None else f", ahead of the runner-up by {lead['mean']:+.4f}" + (
        f" ± {lead['se']:.4f}" if lead["se"] is not None else "")
    noise = "" if record["decided"] else "; chosen within noise (the race ended undecided)"
    return (f"tuning: {name} chose {what}: mean validation {metric} {record['score']:.4f} on {record['seeds']} "
            f"tuning seeds{margin}{noise}")
