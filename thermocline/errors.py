"""The one exception type for mistakes a user can make (bad paths, options, files)."""


class ThermoclineError(Exception):
    """A problem the user can fix; the CLI prints its message without a traceback."""
