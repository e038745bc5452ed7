"""The one exception type for mistakes a user can fix: bad config, bad data, bad paths.

Its message is a single line that names the thing and the fix. The CLI prints it without a
traceback and exits non-zero; anything else that escapes is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix. `str(err)` is one line: what is wrong and what to do."""
