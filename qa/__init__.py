"""Question answering: retrieve, fuse, extract a cited answer, resolve follow-ups."""

from qa.assistant import NOT_FOUND, Assistant
from qa.errors import QuestionError
from qa.models import Answer, Citation

__all__ = ["Assistant", "Answer", "Citation", "QuestionError", "NOT_FOUND"]
