"""Resolve a follow-up question against the conversation's earlier user questions.

Only questions that lean on the previous turn are rewritten, detected by cheap rules
(pronouns, an elliptical "…呢？", a lead-in such as 那/那么/还有, or a question too short to
stand alone). A self-contained question is returned unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# Words that point back at something named earlier.
_ANAPHORA = re.compile(
    r"(它们|它|其(?![他它余次实中])|(?<![应])该|这个|那个|这些|那些|这里|那里|(?<![因如由从彼])此(?!外)"
    r"|上述|前者|后者|这项|这一|他们)"
)
_LEAD_IN = re.compile(r"^(那么|那(?![里个些])|还有|另外|然后|再问一下|再问|同样|以及|和|及)[，,、\s]*")
_ELLIPSIS_END = re.compile(r"(呢|的呢|呢吗)[？?。!！\s]*$")
_QUESTION_WORDS = re.compile(
    r"(请问|请|一下|是什么|什么|是哪些|有哪些|哪些|包括|多少|几个|几|哪里|哪儿|哪个|哪|怎么样|怎样|如何|"
    r"为什么|何时|什么时候|吗|呢|啊|呀|吧|是否)"
)
_PUNCTUATION = re.compile(r"[？?！!。，,、；;：:\s“”\"'‘’（）()]+")
_CJK = re.compile(r"[\u4e00-\u9fff]")
_YEAR = re.compile(r"(19|20)\d{2}\s*年")
# A question shorter than this (in CJK characters, question words removed) rarely stands alone.
_MIN_STANDALONE_CHARS = 4


@dataclass(frozen=True)
class ResolvedQuestion:
    query: str  # what retrieval sees (and what the API returns as `query`)
    focus: str  # the user's own latest words, for weighting the answer step
    rewritten: bool


def topic_of(question: str) -> str:
    """The content words of a question: question words and punctuation removed."""
    return _PUNCTUATION.sub(" ", _QUESTION_WORDS.sub(" ", question)).strip()


def is_followup(question: str) -> bool:
    stripped = question.strip()
    if _LEAD_IN.match(stripped) or _ELLIPSIS_END.search(stripped):
        return True
    if _ANAPHORA.search(stripped):
        return True
    content = _CJK.findall(topic_of(stripped))
    return len(content) < _MIN_STANDALONE_CHARS


def resolve(question: str, history: Sequence[str]) -> ResolvedQuestion:
    """Rewrite `question` with the conversation's earlier user questions when it is a
    follow-up; otherwise return it unchanged."""
    previous = [turn.strip() for turn in history if turn and turn.strip()]
    if not previous or not is_followup(question):
        return ResolvedQuestion(query=question, focus=question, rewritten=False)
    # Walk back past earlier follow-ups to the last self-contained question, so a chain
    # such as "江苏有哪些？" -> "浙江的呢？" -> "面积呢？" keeps its subject.
    context: list[str] = []
    for turn in reversed(previous):
        context.insert(0, topic_of(_LEAD_IN.sub("", turn)))
        if not is_followup(turn) or len(context) >= 3:
            break
    own_words = topic_of(_ANAPHORA.sub(" ", _LEAD_IN.sub("", question.strip())))
    # "2035年呢？" after a question about 2025 asks the same thing of another year: the new
    # year replaces the old one instead of sitting beside it.
    new_year = _YEAR.search(own_words)
    if new_year:
        context = [_YEAR.sub(new_year.group(0), part) for part in context]
    query = " ".join([*context, own_words]).strip()
    return ResolvedQuestion(query=query, focus=own_words or question, rewritten=True)
