"""The one exception type for user mistakes."""


class NntrainError(Exception):
    """A user mistake (bad flag, bad config, missing data): shown as one line, no traceback."""
