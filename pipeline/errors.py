"""The one exception type users see: a one-line message naming the file or key, the value and
what was expected.  The CLI prints it as ``error: <message>`` and exits with status 2."""


class PipelineError(Exception):
    """Bad input or an unmet requirement; ``str(err)`` is a single line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
