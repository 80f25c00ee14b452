"""Errors the QA facade raises for bad input; `message` is Chinese, for end users."""


class QuestionError(ValueError):
    """The question cannot be processed as given (empty, too long, ...)."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.message = message
        self.code = code  # machine-readable: "empty", "too_long", "history_too_long", ...
