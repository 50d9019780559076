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
from dataclasses import dataclass, replace

import optuna
import pandas as pd

from regbench import stats
from regbench.config import DEFAULT_TRIALS, DEFAULT_TUNE_SEEDS, TUNE_METRICS, RunConfig
from regbench.errors import UsageError
from regbench.techniques import BASELINE, Param, compared_params, get_technique, given_values, technique_of

SIGNIFICANT_DIGITS = 3  # proposals are rounded so that a chosen value can be typed back as --param
SAMPLER = "Optuna's QMCSampler (scrambled Sobol sequence, seeded by the setting's name)"
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


def searches_for(setting: tuple[str, ...], ranges: dict, given: dict | None = None) -> list[Search]:
    """Return the searches of a setting: every parameter with a declared range or a --search range, by name,
    but those its arm gives a value of (TECHNIQUE:NAME=VALUE), which stay as given."""
    params = sorted((param for name in setting for param in get_technique(name).params), key=lambda p: p.name)
    return [Search(param, *ranges.get(param.name, param.search)) for param in params
            if (param.name in ranges or param.search is not None) and param.name not in (given or {})]


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
        return [trial.number for trial in self.trials].index(self.study.best_trial.number)


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


@dataclass
class TunePlan:
    """The tuning runs of a comparison: per tuned setting, each trial's runs on the tuning seeds."""

    request: TuneRequest
    settings: tuple[tuple[str, tuple], ...]  # the compared settings with their values as given
    tunings: dict[str, Tuning]  # tuned setting -> its search
    trial_runs: dict[str, list[list[RunConfig]]]  # tuned setting -> trial -> its runs, one per tuning seed
    baseline: list[RunConfig]  # the baseline on the tuning seeds: the level a setting must beat
    untuned: list[str]  # settings with nothing to search (e.g. batchnorm): compared at their values as given

    @property
    def configs(self) -> list[RunConfig]:
        """Return every tuning run, the baseline's first."""
        return self.baseline + [run for trials in self.trial_runs.values() for runs in trials for run in runs]

    def record(self) -> dict:
        """Return what a tuned comparison fixes before it trains (the manifest's "tune"): budget, metric, sampler
        and every setting's searches (name -> low, high, scale) and its values not searched."""
        searches = {name: {search.param.name: {"low": search.low, "high": search.high, "scale": search.param.scale,
                                               "integer": search.param.kind is int}
                           for search in tuning.searches}
                    for name, tuning in self.tunings.items()}
        fixed = {name: {param: value for param, value in params if param not in searches.get(name, {})}
                 for name, params in self.settings}
        return {"trials": self.request.trials, "seeds": list(self.request.seeds), "metric": self.request.metric,
                "sampler": SAMPLER, "searches": searches, "fixed": fixed, "untuned": self.untuned}


def plan_tuning(settings: tuple[tuple[str, tuple], ...], base: RunConfig, request: TuneRequest) -> TunePlan:
    """Propose every tuned setting's trials and lay out their runs on the tuning seeds (nothing trains here)."""
    ranges = dict(request.ranges)
    tunings, trial_runs, untuned = {}, {}, []
    for name, params in settings:
        technique = technique_of(name)
        searches = searches_for(tuple(technique.split("+")), ranges, given_values(name))
        if not searches:
            untuned.append(name)
            continue
        tuning = propose(name, searches, request.trials, request.metric)
        tunings[name] = tuning
        trial_runs[name] = [[replace(base, technique=technique, seed=seed,
                                     technique_params=tuple(sorted({**dict(params), **proposal}.items())))
                             for seed in request.seeds] for proposal in tuning.proposals]
    baseline = [replace(base, technique=BASELINE, technique_params=(), seed=seed) for seed in request.seeds]
    return TunePlan(request, settings, tunings, trial_runs, baseline, untuned)


@dataclass(frozen=True)
class TuneOutcome:
    """What tuning chose: every setting's parameter values, a table of the tuning runs, and the record."""

    settings: tuple[tuple[str, tuple], ...]  # the compared settings with their chosen values
    table: pd.DataFrame  # a row per tuning run (tuning.csv)
    record: dict  # the manifest's "tuned": every trial's values and score, and the choices


def choose(plan: TunePlan, runs: pd.DataFrame, select: str) -> TuneOutcome:
    """Score every trial on the tuning `runs` measured at their `select`ed weights, and choose each setting's
    best: the mean validation metric over the tuning seeds (a trial with a diverged run fails). Only
    validation numbers are read."""
    column = f"val_{plan.request.metric}"
    by_id = stats.selected(runs, select).set_index("run_id")
    rows, choices = [], {}
    for config in plan.baseline:
        rows.append(_tuning_row(BASELINE, None, config, by_id.loc[config.run_id]))
    for name, trials in plan.trial_runs.items():
        scores = []
        for trial, configs in enumerate(trials):
            measured = by_id.loc[[config.run_id for config in configs]]
            ok = (measured["status"] == "ok").all()
            scores.append(float(measured[column].mean()) if ok else math.nan)
            rows += [_tuning_row(name, trial, config, by_id.loc[config.run_id]) for config in configs]
        chosen = plan.tunings[name].choose(scores)
        choices[name] = {"trial": chosen, "params": dict(trials[chosen][0].technique_params),
                         "score": scores[chosen], "scores": scores}
    table = pd.DataFrame(rows).astype({"trial": "Int64"})
    table["score"] = [choices[s]["scores"][t] if s in choices else math.nan
                      for s, t in zip(table["setting"], table["trial"])]
    table["chosen"] = [s in choices and t == choices[s]["trial"] for s, t in zip(table["setting"], table["trial"])]
    baseline_score = float(table.loc[table["setting"] == BASELINE, column].mean())
    record = {  # the manifest's "tuned"
        "baseline_score": baseline_score,
        "chosen": {name: {key: value for key, value in choice.items() if key != "scores"}
                   for name, choice in choices.items()},
        "trials": {name: [{"params": proposal, "score": score}
                          for proposal, score in zip(plan.tunings[name].proposals, choices[name]["scores"])]
                   for name in choices},
    }
    chosen_settings = tuple((name, tuple(sorted(choices[name]["params"].items())) if name in choices else params)
                            for name, params in plan.settings)
    return TuneOutcome(chosen_settings, table, record)


def _tuning_row(setting: str, trial: int | None, config: RunConfig, run: pd.Series) -> dict:
    """Return a tuning run's row of tuning.csv: its setting, trial, values, seed and validation numbers."""
    return {"setting": setting, "trial": trial, "seed": config.seed, "run_id": config.run_id,
            "params": " ".join(f"{name}={value:g}" for name, value in config.technique_params),
            **{f"param_{name}": value for name, value in config.technique_params},
            "status": run["status"], "val_accuracy": run["val_accuracy"],
            "val_crossentropy": run["val_crossentropy"], "best_val_epoch": run["best_val_epoch"]}
