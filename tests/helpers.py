"""Helpers shared by the tests."""

import json

import pandas as pd

from regbench.config import RunConfig
from regbench.techniques import parse_setting, resolve_params


def config_for(setting: str, overrides: dict | None = None, **fields) -> RunConfig:
    """Return a tiny run config (300 images, 1 epoch unless told) for a technique setting."""
    names = parse_setting(setting)
    params = resolve_params(names, overrides or {})
    return RunConfig(**{"train_size": 300, "epochs": 1, **fields},
                     technique="+".join(names), technique_params=params)


def run_quick_studies(root, names) -> dict:
    """Run `regbench study NAME --quick` for each name into root/out/NAME-quick, sharing one run store; return
    each study's output."""
    from click.testing import CliRunner

    from regbench.cli import cli
    from tests.conftest import SMALL_MNIST

    outputs = {}
    for name in names:
        result = CliRunner().invoke(cli, ["study", name, "--quick", "--out", str(root / "out" / f"{name}-quick"),
                                          "--store", str(root / "runs.sqlite"), "--data", str(SMALL_MNIST)])
        assert result.exit_code == 0, result.output
        outputs[name] = result.output
    return outputs


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
    assert f"Training time of the {len(runs)} runs behind" in report

