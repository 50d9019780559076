"""The exceptions the CLI turns into one line: a user's mistake (exit status 2), a sweep cut short (1) and a sweep
stopped by Ctrl-C (130)."""


class UsageError(ValueError):
    """A user's mistake: bad option, parameter, data file, output path or scheduler address."""


class SweepError(RuntimeError):
    """A sweep that could not finish (runs failed on the workers, the scheduler was lost); what it finished is
    stored, and the message says how to resume."""


class Interrupted(Exception):
    """A sweep stopped by Ctrl-C, after saying in one line what it stored and how to resume (click would add a line
    of its own to a KeyboardInterrupt)."""
