"""The exceptions the CLI turns into one line: a user's mistake (exit status 2) and a sweep cut short (1)."""


class UsageError(ValueError):
    """A user's mistake: bad option, parameter, data file, output path or scheduler address."""


class SweepError(RuntimeError):
    """A sweep that could not finish (runs failed on the workers, the scheduler was lost); what it finished is
    stored, and the message says how to resume."""
