"""Errors the QA facade raises for bad input; `message` is Chinese, for end users."""


class QuestionError(ValueError):
    """The question cannot be processed as given (empty, too long, ...)."""

    def __init__(self, message: str, code: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code  # machine-readable: "empty", "too_long", "history_too_long", ...
        self.field = field  # the input at fault: "question", "history", "documents", "top_k"
