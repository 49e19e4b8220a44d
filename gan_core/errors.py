"""The one exception type for user errors: entry points print its message on one line, no traceback."""


class UserError(Exception):
    """Bad input from the user (config, paths, data, model URIs).

    The message names the bad value and what is accepted."""
