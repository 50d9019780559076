"""The one exception a user's mistake raises; the CLI turns it into exit status 2."""


class UsageError(ValueError):
    """A user's mistake: bad option, parameter, data file or output path."""
