"""Experiments as files: a command's options read from TOML (`--config`), and a comparison written back as one."""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from pathlib import Path

import click
import tomli_w

from regbench import __version__
from regbench.errors import UsageError

EXPERIMENT_FILE = "experiment.toml"  # written beside every comparison; `compare --config` reruns it


def read_options(path: Path, command: click.Command, ctx: click.Context) -> dict:
    """Return the option values of TOML file `path` for `command`, by parameter name, each converted and checked
    as its flag would be. Keys are long option names ('train-size' or 'train_size'); a mistake is a UsageError
    naming the key and its line."""
    try:
        text = path.read_text(encoding="utf-8")
        values = tomllib.loads(text)
    except OSError as error:
        raise UsageError(f"--config {path}: cannot be read ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise UsageError(f"--config {path}: not a text file (TOML is UTF-8)") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"--config {path}: not valid TOML: {error}") from None
    options = {name[2:]: param for param in command.params if isinstance(param, click.Option)
               for name in param.opts if name.startswith("--") and name != "--config"}
    options |= {name.replace("-", "_"): param for name, param in options.items()}
    chosen = {}
    for key, value in values.items():
        where = f"{path}:{_line_of(text, key)}"
        if key not in options:
            close = difflib.get_close_matches(key, [name for name in options if "_" not in name], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"{where}: unknown key {key!r}{hint}; the keys are the long option names of "
                             f"`regbench {command.name}` (see --help)")
        param = options[key]
        if param.name in chosen:
            raise UsageError(f"{where}: {key} is given twice (as {key.replace('_', '-')} and "
                             f"{key.replace('-', '_')}); give it once")
        if isinstance(param.type, click.Path) and isinstance(value, str):  # relative to the file, not to where it runs
            value = os.path.normpath(path.parent / Path(value).expanduser())
        try:
            chosen[param.name] = param.type_cast_value(ctx, _as_flag_value(key, value, param))
        except click.BadParameter as error:
            raise UsageError(f"{where}: {key} = {_toml(value)}: {error.message}") from None
        except _WrongType as error:
            raise UsageError(f"{where}: {key} = {_toml(value)} is {error}") from None
    return chosen


class _WrongType(Exception):
    """A TOML value of a type the option does not take."""


def _as_flag_value(key: str, value, param: click.Option):
    """Return a TOML value as its command-line flag would give it, or raise _WrongType saying what was expected."""
    if isinstance(value, dict):
        if param.metavar == "NAME=N[,NAME=N]":  # --resources as a table: {GPU = 1}
            return ",".join(f"{name}={amount}" for name, amount in value.items())
        raise _WrongType("a table; expected a single value")
    if param.is_flag:
        if not isinstance(value, bool):
            raise _WrongType("not a boolean; write true or false")
        return value
    if param.multiple:
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, str) for item in items):
            raise _WrongType('not a string or a list of strings, e.g. ["rate=0.3"]')
        return tuple(items)
    if isinstance(value, bool):
        raise _WrongType(f"a boolean; {key} takes a value")
    if isinstance(param.type, click.types.IntParamType):
        if not isinstance(value, int):
            raise _WrongType("not an integer")
        return value
    if isinstance(param.type, click.types.FloatParamType):
        if not isinstance(value, (int, float)):
            raise _WrongType("not a number")
        return float(value)
    if isinstance(value, list):  # a comma-separated option (--hidden, --seed-list, --technique) as a list
        if not all(isinstance(item, (str, int)) and not isinstance(item, bool) for item in value):
            raise _WrongType("a list of other things than strings or integers")
        return ",".join(str(item) for item in value)
    if isinstance(value, (int, float)) and param.metavar == "N,N,...":
        return str(value)
    if not isinstance(value, str):
        raise _WrongType("not a string")
    return value


def _line_of(text: str, key: str) -> int | str:
    """Return the line of `text` that sets `key` (1-based), or '?' where it cannot be found."""
    pattern = re.compile(rf"""^\s*["']?{re.escape(key)}["']?\s*=""")
    return next((number for number, line in enumerate(text.splitlines(), start=1) if pattern.match(line)), "?")


def _toml(value) -> str:
    """Write a value as TOML writes it (for messages)."""
    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


def experiment_toml(options: dict) -> str:
    """Return experiment.toml: the resolved options of a comparison, which `regbench compare --config` reruns."""
    return (f"# This comparison's options, as regbench {__version__} resolved them; paths are relative to this file's\n"
            f"# folder. Rerun it from anywhere: regbench compare --config PATH/TO/{EXPERIMENT_FILE}\n"
            + tomli_w.dumps(options))
