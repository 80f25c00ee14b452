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
    focus: str  # the user's own latest words
    rewritten: bool
    # What the reader sees: a whole question in the user's words where the follow-up can be
    # put back into the earlier question ("那它涉及哪几个区？" after a question about 虹桥国际
    # 中央商务区 -> "虹桥国际中央商务区涉及哪几个区？"), else the retrieval query.
    reader_question: str = ""

    def __post_init__(self) -> None:
        if not self.reader_question:
            object.__setattr__(self, "reader_question", self.query)


# Where a question's subject ends: the first particle, verb or question word after it.
_SUBJECT_END = re.compile(r"的|在|是|有|包括|涉及|位于|叫|什么|哪|多少|几|如何|怎么|怎样|何时|将|要|对|能|可以|办|举办")
_NAME_FLAGS = ("ns", "nr", "nt")  # places, people, organisations


def subject_of(question: str) -> str:
    """The leading noun phrase of a question: "虹桥国际中央商务区的规划面积是多少？" ->
    "虹桥国际中央商务区"."""
    text = _LEAD_IN.sub("", question.strip())
    for match in _SUBJECT_END.finditer(text):
        if match.start() >= 2:
            return text[: match.start()]
    return topic_of(text)


def _names(text: str) -> list[tuple[str, str]]:
    import jieba.posseg

    return [(pair.word, pair.flag) for pair in jieba.posseg.cut(text) if pair.flag in _NAME_FLAGS]


def _put_back(base: str, followup: str) -> str | None:
    """The earlier whole question `base` asked again with what the follow-up changes, or
    None when the rules cannot tell."""
    own = _LEAD_IN.sub("", followup.strip())
    subject = subject_of(base)
    anaphor = _ANAPHORA.search(own)
    if anaphor:
        rest = own[anaphor.end() :]
        # "这个产业园" after "…国际会展产业园…": the pointer and the repeated noun are the subject
        overlap = next((k for k in range(min(len(rest), len(subject)), 0, -1) if subject.endswith(rest[:k])), 0)
        return _as_question(own[: anaphor.start()] + subject + rest[overlap:])
    rewritten = base
    new_year = _YEAR.search(own)
    if new_year:
        rewritten = _YEAR.sub(new_year.group(0), rewritten)
    replaced = False
    # a name of the same kind is swapped, never one inside the subject (虹桥 of 虹桥国际开放枢纽)
    base_names = [(name, flag) for name, flag in _names(rewritten) if name not in subject or name == subject]
    for word, flag in _names(own):
        old = next((name for name, name_flag in base_names if name_flag == flag and name != word), None)
        if old:
            rewritten, replaced = rewritten.replace(old, word, 1), True
    if new_year or replaced:
        return rewritten
    words = topic_of(_ELLIPSIS_END.sub("", own))
    if _ELLIPSIS_END.search(own) and words:  # "面积呢？": the same subject, another attribute
        return f"{subject}的{words}是什么？"
    return None


def _as_question(text: str) -> str:
    """An elliptical "…的面积呢？" asked as a whole question for the reader."""
    return _ELLIPSIS_END.sub("是什么？", text) if _ELLIPSIS_END.search(text) else text


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
    # The reader's question: the last self-contained question, with each later follow-up
    # put back into it in turn.
    start = len(previous) - len(context)
    whole: str | None = _LEAD_IN.sub("", previous[start])
    for turn in [*previous[start + 1 :], question]:
        whole = _put_back(whole, turn) if whole else None
    return ResolvedQuestion(
        query=query, focus=own_words or question, rewritten=True, reader_question=whole or query
    )
