"""The one exception type users see.

Every problem caused by the user's input (a config key, a CSV column, a request field) is raised as a
ChurnflowError whose message is one line that names the field and what was expected. The CLI prints it
without a traceback and exits non-zero; the predictor turns the same message into an HTTP 400.
"""


class ChurnflowError(ValueError):
    """A user-facing error whose message is a single readable line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))
