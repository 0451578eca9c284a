"""The one exception type for user mistakes."""


class NntrainError(Exception):
    """A user mistake (bad flag, bad config, missing data): shown as one line, no traceback.

    Line breaks inside the message (from a value the user typed) are escaped, so it stays one line.
    """

    def __init__(self, message: str = ""):
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"))
