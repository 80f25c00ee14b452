import pytest

from qa.followup import is_followup, resolve
from qa.question import QuestionKind, classify


@pytest.mark.parametrize(
    "question",
    ["那它的面积呢？", "这个平台在哪个区？", "浙江的呢？", "2035年呢？", "还有吗", "其目标是什么"],
)
def test_followups_are_detected(question):
    assert is_followup(question)


@pytest.mark.parametrize(
    "question",
    [
        "虹桥国际开放枢纽包括哪些区域？",
        "虹桥商务区多大？",
        "进博会办了几届了",
        "因此虹桥商务区应该发展什么产业？",
        "有哪些其他支持总部经济的政策",
    ],
)
def test_self_contained_questions_are_not_followups(question):
    assert not is_followup(question)


def test_self_contained_question_is_returned_unchanged_even_with_history():
    resolved = resolve("虹桥商务区的面积是多少？", ["进博会在哪里举办？"])
    assert resolved.query == "虹桥商务区的面积是多少？"
    assert not resolved.rewritten


def test_followup_carries_the_previous_subject():
    resolved = resolve("那它的面积呢？", ["虹桥国际中央商务区在哪里？"])
    assert resolved.rewritten
    assert "虹桥国际中央商务区" in resolved.query and "面积" in resolved.query
    assert "它" not in resolved.focus


def test_followup_year_replaces_the_earlier_year():
    resolved = resolve("2035年呢？", ["到2025年虹桥国际开放枢纽要达到什么目标？"])
    assert "2035年" in resolved.query and "2025" not in resolved.query


def test_chained_followups_keep_the_original_subject():
    resolved = resolve("面积呢？", ["江苏有哪些地区纳入虹桥国际开放枢纽？", "浙江的呢？"])
    assert "虹桥国际开放枢纽" in resolved.query and "浙江" in resolved.query


def test_followup_without_history_is_unchanged():
    assert resolve("那它的面积呢？", []).query == "那它的面积呢？"


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("虹桥商务区面积多少平方公里？", QuestionKind.NUMBER),
        ("进博会什么时候举办？", QuestionKind.DATE),
        ("重点产业有哪些？", QuestionKind.LIST),
        ("什么是离岸贸易？", QuestionKind.DEFINITION),
        ("这份规划由谁发布？", QuestionKind.ENTITY),
    ],
)
def test_question_kind_cues(question, kind):
    assert classify(question) is kind
