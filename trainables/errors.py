"""The one exception type for mistakes a user can fix: bad config, bad data, bad paths.

Its message is a single line that names the thing and the fix. The CLI prints it without a
traceback and exits non-zero; anything else that escapes is a bug and keeps its traceback.
`filter_once` installs the logging filters that keep Ray from repeating such a line with a traceback.
"""

import logging


class UserError(Exception):
    """A mistake the user can fix. `str(err)` is one line: what is wrong and what to do."""


def filter_once(logger: str, kind: type[logging.Filter]) -> None:
    """Add a `kind` filter to `logger` unless it has one (a process may start several sweeps or trials)."""
    log = logging.getLogger(logger)
    if not any(isinstance(f, kind) for f in log.filters):
        log.addFilter(kind())
