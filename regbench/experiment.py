"""Experiments as files: a command's options read from TOML (`--config`), and a comparison written back as one."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import tomli_w

from regbench import __version__
from regbench.errors import UsageError

EXPERIMENT_FILE = "experiment.toml"  # written beside every comparison; `compare --config` reruns it


def read_toml(path: Path) -> tuple[dict, Callable[[str], str]]:
    """Return the values of TOML file `path` and a function saying where a key is set ('FILE:LINE', for messages);
    a file that cannot be read or parsed is a UsageError."""
    try:
        text = path.read_text(encoding="utf-8")
        values = tomllib.loads(text)
    except OSError as error:
        raise UsageError(f"--config {path}: cannot be read ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise UsageError(f"--config {path}: not a text file (TOML is UTF-8)") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"--config {path}: not valid TOML: {error}") from None
    return values, lambda key: f"{path}:{_line_of(text, key)}"


def _line_of(text: str, key: str) -> int | str:
    """Return the line of `text` that sets `key` (1-based), or '?' where it cannot be found."""
    pattern = re.compile(rf"""^\s*["']?{re.escape(key)}["']?\s*=""")
    return next((number for number, line in enumerate(text.splitlines(), start=1) if pattern.match(line)), "?")


def toml_text(value) -> str:
    """Write a value as TOML writes it (for messages)."""
    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


def experiment_toml(options: dict) -> str:
    """Return experiment.toml: the resolved options of a comparison, which `regbench compare --config` reruns."""
    return (f"# This comparison's options, as regbench {__version__} resolved them; paths are relative to this file's\n"
            f"# folder. Rerun it from anywhere: regbench compare --config PATH/TO/{EXPERIMENT_FILE}\n"
            + tomli_w.dumps(options))
