"""What every way in (chat page, CLI, bots, OpenAI-compatible API) shows the same way: the
answer span marked inside the answer text, the confidence line, and the example questions.

Only the markers differ per channel (<mark> on the page, 【】 in a chat bot, ** in Markdown,
bold in a terminal); where the span sits and how confidence reads is decided here once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from qa.models import confidence_label

logger = logging.getLogger(__name__)

EXAMPLES_PATH = Path(__file__).with_name("examples.json")

PLAIN_MARKS = ("【", "】")
MARKDOWN_MARKS = ("**", "**")


def _unchanged(text: str) -> str:
    return text


def span_bounds(text: str, span: str | None) -> tuple[int, int] | None:
    """[start, end) of the first occurrence of `span` in `text`; None when there is no span
    or `text` does not contain it."""
    if not span or not span.strip():
        return None
    start = text.find(span)
    return None if start < 0 else (start, start + len(span))


def mark_span(
    text: str,
    span: str | None,
    before: str,
    after: str,
    escape: Callable[[str], str] = _unchanged,
) -> str:
    """`text` with `span` wrapped in `before` / `after`, every piece of `text` passed through
    `escape` (e.g. `html.escape`; the markers are not). `text` comes back only escaped when
    it does not contain `span`."""
    bounds = span_bounds(text, span)
    if bounds is None:
        return escape(text)
    start, end = bounds
    return escape(text[:start]) + before + escape(text[start:end]) + after + escape(text[end:])


def confidence_text(confidence: float, label: str | None = None) -> str:
    """What users read next to an answer: "置信度：高（0.93）". `label` defaults to the QA
    layer's label of `confidence`; pass the one an `Answer.to_dict()` carries to show it as
    sent."""
    label = label or confidence_label(confidence)
    return f"置信度：{label}（{float(confidence):.2f}）"


@lru_cache(maxsize=4)
def example_questions(path: Path = EXAMPLES_PATH) -> tuple[str, ...]:
    """The example questions shown to users, from the JSON file at `path`: an object whose
    "questions" is a list of strings, in the order to show them. A missing or malformed
    file gives no examples (logged as a warning), never an error."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        questions = data["questions"]
        if not isinstance(questions, list) or not all(isinstance(q, str) for q in questions):
            raise ValueError('"questions" must be a list of strings')
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        logger.warning("no example questions: cannot read %s (%s)", path, error)
        return ()
    return tuple(question.strip() for question in questions if question.strip())
