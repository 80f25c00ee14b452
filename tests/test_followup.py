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


@pytest.mark.parametrize(
    ("question", "history", "whole"),
    [
        ("那它涉及哪几个区？", ["虹桥国际中央商务区的规划面积是多少？"], "虹桥国际中央商务区涉及哪几个区？"),
        ("浙江的呢？", ["虹桥国际开放枢纽在江苏包括哪些地方？"], "虹桥国际开放枢纽在浙江包括哪些地方？"),
        ("2035年呢？", ["到2025年虹桥国际开放枢纽要达到什么目标？"], "到2035年虹桥国际开放枢纽要达到什么目标？"),
        ("这个产业园在哪个区？", ["上海第一个国际会展产业园叫什么？"], "上海第一个国际会展产业园在哪个区？"),
        ("那它的面积呢？", ["虹桥国际中央商务区在哪里？"], "虹桥国际中央商务区的面积是什么？"),
        ("面积呢？", ["江苏有哪些地区纳入虹桥国际开放枢纽？", "浙江的呢？"], "浙江的面积是什么？"),
    ],
)
def test_reader_sees_the_followup_put_back_into_the_earlier_question(question, history, whole):
    resolved = resolve(question, history)
    assert resolved.reader_question == whole
    assert resolved.query != whole  # retrieval keeps its keyword query


def test_reader_question_of_a_plain_question_is_the_question():
    assert resolve("虹桥商务区的面积是多少？", []).reader_question == "虹桥商务区的面积是多少？"
