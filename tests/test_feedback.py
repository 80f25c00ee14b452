"""The feedback store (real SQLite in a temp dir) and `policyqa feedback`."""

from __future__ import annotations

import json
import sqlite3

import pytest
from click.testing import CliRunner

from ui.cli import main
from ui.feedback import FeedbackStore

GOOD_ANSWER = {
    "answer": "虹桥国际开放枢纽包括上海虹桥商务区及所在的长宁区、嘉定区、闵行区的其他区域和松江区、金山区。",
    "answered": True,
    "query": "虹桥国际开放枢纽包括哪些区域？",
    "citations": [
        {
            "title": "虹桥国际开放枢纽建设总体方案",
            "section": "一、建设背景",
            "quote": "虹桥国际开放枢纽包括上海虹桥商务区……",
            "source_file": "001_bfabfcb7a022c977.txt",
            "doc_id": "001",
            "chunk_id": "aaaa000011112222",
            "score": 0.83,
            "highlights": [[8, 20]],
            "note": None,
        }
    ],
    "passages": [],
    "span": None,
    "latency_ms": 12.0,
    "notice": None,
}
BAD_ANSWER = {**GOOD_ANSWER, "query": "它的总体目标是什么？ 虹桥", "answer": "一段答非所问的原文。"}


@pytest.fixture()
def store(tmp_path):
    return FeedbackStore(tmp_path / "nested" / "feedback.sqlite3")


def test_store_list_and_export_round_trip(store, tmp_path):
    up = store.add("up", "虹桥国际开放枢纽包括哪些区域？", GOOD_ANSWER)
    down = store.add(
        "down", "它的总体目标是什么？", BAD_ANSWER,
        history=["虹桥国际开放枢纽包括哪些区域？"], comment="答非所问",
    )

    items = store.items()
    assert [item.id for item in items] == [down.id, up.id]  # newest first
    assert items[0].history == ("虹桥国际开放枢纽包括哪些区域？",)
    assert items[0].answer == BAD_ANSWER
    assert items[0].citations[0]["doc_id"] == "001"
    assert [item.id for item in store.items(rating="up")] == [up.id]

    exported = tmp_path / "candidates.jsonl"
    assert store.export_candidates(exported) == 1
    lines = exported.read_text(encoding="utf-8").splitlines()
    candidate = json.loads(lines[0])
    assert candidate["id"] == f"feedback-{down.id:05d}"
    assert candidate["question"] == "它的总体目标是什么？"
    assert candidate["history"] == ["虹桥国际开放枢纽包括哪些区域？"]
    assert candidate["split"] == "dev" and candidate["style"] == "user"
    assert candidate["answerable"] is None and candidate["answer"] == ""
    assert candidate["keywords"] == [] and candidate["evidence"] == []
    assert candidate["bad_answer"]["answer"] == "一段答非所问的原文。"
    assert candidate["bad_answer"]["citations"][0]["chunk_id"] == "aaaa000011112222"
    assert candidate["bad_answer"]["comment"] == "答非所问"


def test_rows_survive_a_new_store_object(store):
    store.add("down", "问题一", GOOD_ANSWER)
    reopened = FeedbackStore(store.path)
    assert [item.question for item in reopened.items()] == ["问题一"]
    with sqlite3.connect(store.path) as connection:
        assert connection.execute("SELECT count(*) FROM feedback").fetchone()[0] == 1


def test_retract_removes_only_that_item(store):
    kept = store.add("up", "问题一", GOOD_ANSWER)
    taken_back = store.add("down", "问题二", GOOD_ANSWER)
    assert store.retract(taken_back.id) is True
    assert store.retract(taken_back.id) is False
    assert [item.id for item in store.items()] == [kept.id]


def test_unknown_rating_is_refused_and_nothing_stored(store):
    with pytest.raises(ValueError):
        store.add("meh", "问题", GOOD_ANSWER)  # type: ignore[arg-type]
    assert store.items() == []


def test_items_of_a_missing_database_is_empty_without_creating_it(tmp_path):
    store = FeedbackStore(tmp_path / "none.sqlite3")
    assert store.items() == []
    assert not store.path.exists()


def test_feedback_command_lists_json_and_exports(store, tmp_path):
    store.add("up", "虹桥国际开放枢纽包括哪些区域？", GOOD_ANSWER)
    store.add("down", "它的总体目标是什么？", BAD_ANSWER)
    runner = CliRunner()
    database = ["--db", str(store.path)]

    table = runner.invoke(main, ["feedback", *database])
    assert table.exit_code == 0, table.output
    assert "虹桥国际开放枢纽包括哪些区域？" in table.output
    assert "down" in table.output and "up" in table.output

    as_json = runner.invoke(main, ["feedback", "--json", "--rating", "down", *database])
    assert as_json.exit_code == 0, as_json.output
    assert [item["question"] for item in json.loads(as_json.output)] == ["它的总体目标是什么？"]

    target = tmp_path / "out" / "candidates.jsonl"
    exported = runner.invoke(main, ["feedback", "--export", str(target), *database])
    assert exported.exit_code == 0, exported.output
    assert "1" in exported.output
    assert json.loads(target.read_text(encoding="utf-8"))["bad_answer"]["answered"] is True


def test_feedback_command_on_an_empty_database_says_so(tmp_path):
    result = CliRunner().invoke(main, ["feedback", "--db", str(tmp_path / "empty.sqlite3")])
    assert result.exit_code == 0
    assert "no feedback yet" in result.output
