"""Document statuses: which count as in force, and the "only documents in force" filter over a
real index of one document per status (issue 14: drafts and excerpts were counted in force)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corpus import CatalogueError, load_file
from corpus.models import Document, Status
from corpus.settings import PROJECT_ROOT, Settings

# Written out, not derived from Status, so that a status changing its meaning fails here.
COUNTS_IN_FORCE = {
    "in force": True,
    "superseded": False,
    "expired": False,
    "excerpt": False,
    "research/opinion": False,
    "draft": False,
}
QUESTION = "人才公寓租金补贴标准是每月多少元？"


def test_every_status_is_listed_here():
    assert {status.value for status in Status} == set(COUNTS_IN_FORCE)


@pytest.mark.parametrize("value", sorted(COUNTS_IN_FORCE))
def test_whether_each_status_counts_as_in_force(value):
    status = Status(value)
    assert status.in_force is COUNTS_IN_FORCE[value]
    document = Document(doc_id="x", title="示例", source_file="x.txt", text="正文。", status=value)
    assert document.in_force is COUNTS_IN_FORCE[value]
    # A status that is not in force is explained next to every citation; in force is not.
    assert (status.note is None) is COUNTS_IN_FORCE[value]
    assert status.label and not status.label.isascii()


def test_a_document_without_a_status_counts_as_in_force():
    assert Document(doc_id="x", title="示例", source_file="x.txt", text="正文。").in_force


def test_the_catalogue_refuses_an_unknown_status_in_chinese(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("示例\n正文。\n", encoding="utf-8")
    with pytest.raises(CatalogueError, match="效力状态"):
        load_file(path, {"files": {"a.txt": {"doc_id": "a", "title": "示例", "status": "obsolete"}}})


def _policy(edition: str, amount: int) -> str:
    return (
        f"虹桥商务区人才公寓租金补贴办法（{edition}）\n"
        "一、补贴标准\n"
        f"符合条件的人才公寓承租人，人才公寓租金补贴标准为每月{amount}元。\n"
    )


@pytest.fixture(scope="module")
def status_assistant(tmp_path_factory: pytest.TempPathFactory):
    """A real index over one document per status (and one without a status)."""
    from index import build_index
    from qa import Assistant

    work = tmp_path_factory.mktemp("statuses")
    corpus_dir = work / "corpus"
    corpus_dir.mkdir()
    files = {}
    for number, status in enumerate([*COUNTS_IN_FORCE, None]):
        name = f"doc{number}.txt"
        (corpus_dir / name).write_text(_policy(status or "未登记", 1000 + number * 100), encoding="utf-8")
        if status is not None:
            files[name] = {"doc_id": f"d{number}", "title": f"租金补贴办法{number}", "status": status}
    catalogue = work / "catalogue.json"
    catalogue.write_text(json.dumps({"files": files}, ensure_ascii=False), encoding="utf-8")
    settings = Settings(
        corpus_dir=corpus_dir, catalogue_path=catalogue, index_dir=work / "index", data_dir=work,
        cache_dir=PROJECT_ROOT / "var" / "cache", feedback_db=work / "feedback.sqlite3",
    )
    build_index(settings, progress=False)
    return Assistant.load(settings)


def test_only_the_in_force_documents_are_in_force_in_a_real_index(status_assistant):
    statuses = {document.doc_id: document.status for document in status_assistant.documents}
    expected = {
        doc_id for doc_id, status in statuses.items()
        if status is None or COUNTS_IN_FORCE[status]
    }
    assert len(statuses) == len(COUNTS_IN_FORCE) + 1
    assert status_assistant.in_force_doc_ids() == expected
    assert {statuses[doc_id] for doc_id in expected} == {Status.IN_FORCE, None}


def test_in_force_only_answers_never_cite_drafts_or_excerpts(status_assistant):
    answer = status_assistant.ask(QUESTION, in_force_only=True)
    cited = {c.doc_id for c in (*answer.citations, *answer.passages)}
    assert cited and cited <= status_assistant.in_force_doc_ids()
    everything = status_assistant.ask(QUESTION, top_k=10)
    assert {p.doc_id for p in everything.passages} - status_assistant.in_force_doc_ids()
