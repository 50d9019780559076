"""The documentation site builds strictly (no broken link or reference) and shows what the code says."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Build the site with --strict into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_the_cli_reference_is_every_command_s_help(site):
    from click.testing import CliRunner

    from regbench.cli import cli

    page = (site / "reference" / "cli.html").read_text()
    for name, command in cli.commands.items():
        assert f"regbench {name}" in page
        for option in command.params:
            for flag in option.opts:
                assert flag in page, f"{name} {flag} is missing from the CLI reference"
    help_text = CliRunner().invoke(cli, ["compare", "--help"]).output
    assert "--tune-shared" in help_text and "--tune-shared" in page


def test_the_api_reference_documents_every_public_name(site):
    import regbench

    page = (site / "reference" / "api.html").read_text()
    for name in regbench.__all__:
        assert re.search(rf'id="regbench\.(api|errors)\.{name}"', page), f"{name} is missing from the API reference"


def test_the_reference_reports_and_their_figures_are_pages(site):
    report = site / "reports" / "REPORT.html"
    assert report.exists() and (site / "reports" / "paired_test_accuracy.png").exists()
    assert "Bottom line" in report.read_text()
    assert not list((site / "reports").rglob("*.csv")), "tables are left out of the site"


def test_the_readme_stays_a_short_guide():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    assert "make test" in readme
