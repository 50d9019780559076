"""The exceptions the CLI turns into one line: a user's mistake (exit status 2), a sweep cut short (1) and a sweep
stopped by Ctrl-C (130), and the hint every unknown name gets."""

import difflib


class UsageError(ValueError):
    """A user's mistake: bad option, parameter, data file, output path or scheduler address."""


class SweepError(RuntimeError):
    """A sweep that could not finish (runs failed on the workers, the scheduler was lost); what it finished is
    stored, and the message says how to resume."""


class Interrupted(Exception):
    """A sweep stopped by Ctrl-C, after saying in one line what it stored and how to resume (click would add a line
    of its own to a KeyboardInterrupt)."""


def did_you_mean(word: str, choices) -> str:
    """Return ' (did you mean X?)' for the choice closest to a mistyped `word`, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
