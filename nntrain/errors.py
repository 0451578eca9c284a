"""The one exception type for user mistakes, and the one line of a TensorFlow error it quotes."""

import re


class NntrainError(Exception):
    """A user mistake (bad flag, bad config, missing data): shown as one line, no traceback.

    Line breaks inside the message (from a value the user typed) are escaped, so it stays one line.
    """

    def __init__(self, message: str = ""):
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"))


def op_message(error: Exception) -> str:
    """The first line of a TensorFlow op error's message, without its `{{function_node ...}}` and `[Op:...]`."""
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:[^\]]*\].*$", "", message.splitlines()[0]).strip()
