"""Helpers shared by the tests."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from regbench.config import RunConfig
from regbench.techniques import parse_setting, resolve_params


def config_for(setting: str, overrides: dict | None = None, **fields) -> RunConfig:
    """Return a tiny run config (300 images, 1 epoch unless told) for a technique setting."""
    names = parse_setting(setting)
    params = resolve_params(names, overrides or {})
    return RunConfig(**{"train_size": 300, "epochs": 1, **fields},
                     technique="+".join(names), technique_params=params)


def quick_studies_on_jax(root, names, *options: str, oracle: bool = False, own_validation: tuple = ()) -> dict:
    """Run `regbench study NAME --quick [OPTION ...]` for each name, one after another in one JAX process
    (tests/quick_studies.py, where their compiled programs are shared), into root/out/NAME-quick with one run
    store (root/oracle/NAME-quick with `oracle`: what choices must not read scrambled, for the studies in
    `own_validation` the test set alone); return each study's exit code, stdout and stderr."""
    from tests.conftest import SMALL_MNIST

    env = dict(os.environ)
    env.pop("KERAS_BACKEND", None)  # the study's --backend jax chooses
    if oracle:
        env["REGBENCH_TEST_ORACLE"] = "1"
        env["REGBENCH_TEST_ORACLE_OWN_VALIDATION"] = ",".join(own_validation)
    done = subprocess.run([sys.executable, str(Path(__file__).parent / "quick_studies.py"), str(root), str(SMALL_MNIST),
                           *names, "--", *options], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_quick_studies(root, names) -> dict:
    """Run every study in `names` with --quick (quick_studies_on_jax); assert that each succeeded and return its
    output."""
    results = quick_studies_on_jax(root, names)
    for name, result in results.items():
        assert result["exit_code"] == 0, f"{name}: {result['stdout']}{result['stderr']}"
    return {name: result["stdout"] for name, result in results.items()}


def check_choices_blind(root, names, own_validation: tuple = ()) -> None:
    """Run the quick studies `names` again, already trained, with every test number, every validation number of
    the evaluation seeds and the test labels scrambled (tests/quick_studies.py; for the studies in `own_validation`,
    whose per-run rules read each run's own validation curve, the test numbers and labels alone); assert that each
    study's choices (choices.csv) come out the same, and that the scrambling reached it (its evaluation runs' test
    numbers differ)."""
    results = quick_studies_on_jax(root, names, oracle=True, own_validation=own_validation)
    for name in names:
        assert results[name]["exit_code"] == 0, f"{name}: {results[name]['stdout']}{results[name]['stderr']}"
        plain, scrambled = (root / folder / f"{name}-quick" for folder in ("out", "oracle"))
        pd.testing.assert_frame_equal(pd.read_csv(plain / "choices.csv"), pd.read_csv(scrambled / "choices.csv"))
        tests = [pd.read_csv(folder / "runs.csv")["test_accuracy"] for folder in (plain, scrambled)]
        assert not np.allclose(*tests)


def check_quick_report(root, outputs: dict, name: str) -> None:
    """Assert that a quick study wrote its report, figures and runs, with a verdict from its numbers."""
    out = root / "out" / f"{name}-quick"
    report = (out / "REPORT.md").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert report.startswith(f"# Study `{name}`")
    assert f"**Verdict.** {manifest['verdict']}" in report
    assert f"{name}: {manifest['verdict']}" in outputs[name]
    assert any(char.isdigit() for char in manifest["verdict"])
    assert list(out.glob("*.png")) and (out / "report.html").stat().st_size > 10_000
    for figure in out.glob("*.png"):
        assert f"]({figure.name})" in report
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) and (runs["status"] == "ok").all()
    tuning = len(pd.read_csv(out / "tuning_runs.csv")) if (out / "tuning_runs.csv").exists() else 0
    assert f"Training time of the {len(runs) + tuning} runs behind" in report

