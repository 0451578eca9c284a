"""The one exception type for user mistakes, and the one line of a TensorFlow error it quotes."""

import re


class NntrainError(Exception):
    """A user mistake (bad flag, bad config, missing data): shown as one line, no traceback.

    Line breaks inside the message (from a value the user typed) are escaped, so it stays one line.
    """

    def __init__(self, message: str = ""):
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"))


# what tf.data puts before the message of an op in a dataset's map function
_IN_DATASET_FUNCTION = re.compile(r"^Error in user-defined function passed to .*? transformation with iterator: \S+: ")


def op_message(error: Exception) -> str:
    """The first line of a TensorFlow op error's message, without its `{{function_node ...}}` and `[Op:...]`; of a
    graph's error, the op's line (after the stack of where its node was defined, before its `[[node]]` lines)."""
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    if message.startswith("Graph execution error:"):
        lines = message.splitlines()
        nodes = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[[")), len(lines))
        message = _IN_DATASET_FUNCTION.sub("", lines[nodes - 1])
    return re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:[^\]]*\].*$", "", message.splitlines()[0]).strip()
