"""Replicas (issue 13, item 4): several `policyqa serve` share one index directory (and
here one corpus folder and catalogue), and a build one of them publishes reaches the others
without a restart (`ui.reload.IndexWatcher`).

The first test runs two real `policyqa serve` processes on 127.0.0.1: replica A has the
admin key and is the one writer, replica B has none. A document uploaded through A is
answered and cited by B once B's index version is A's; once it is removed through A, B
stops citing it. The others check the watcher in this process on a copy of the seed index:
a broken build never replaces a good one, and a replica that is rebuilding leaves the
build it publishes to its own rebuild.

Passage embeddings come from the shared cache in var/cache, so only the new document's
passages are embedded.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from corpus.settings import PROJECT_ROOT, Settings
from helpers import copy_seed_corpus, server_environment

ADMIN_KEY = "replica-test-key-" + uuid.uuid4().hex[:12]
RUN_MARK = uuid.uuid4().hex[:10]
# Generous: two servers start together on a loaded 2-core machine.
START_TIMEOUT_S = 240
FOLLOW_TIMEOUT_S = 180
RELOAD_INTERVAL_S = "0.5"

CANTEEN_POLICY = f"""虹桥商务区关于印发《园区职工食堂运营补贴实施细则》的通知
各有关单位：
现将《园区职工食堂运营补贴实施细则》印发给你们，请遵照执行。（登记号 RP-{RUN_MARK}）
一、补贴对象
在虹桥商务区内为园区职工提供午餐服务的职工食堂运营单位，可以申请职工食堂运营补贴。
二、补贴标准
职工食堂运营补贴按每份午餐6元的标准核定，每家运营单位每年最高补贴80万元。
三、申请方式
运营单位每季度通过“虹桥企业服务”平台提交供餐记录，管理委员会在二十个工作日内完成审核。
"""
CANTEEN_QUESTION = "职工食堂运营补贴的标准是多少？"


def environment(settings: Settings, admin: bool) -> dict[str, str]:
    env = server_environment(
        settings,
        PYTHONUNBUFFERED="1",
        POLICYQA_INDEX_RELOAD_INTERVAL_S=RELOAD_INTERVAL_S,
        # One process fewer on 2 cores: the writer rebuilds in the server process.
        POLICYQA_REBUILD_ISOLATED="false",
    )
    env.pop("POLICYQA_ADMIN_API_KEY", None)
    if admin:
        env["POLICYQA_ADMIN_API_KEY"] = ADMIN_KEY
    return env


class Replica:
    """One real `policyqa serve` on a free loopback port, its output in `log`."""

    def __init__(self, settings: Settings, name: str, admin: bool, work: Path) -> None:
        from ui.server import free_port

        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = work / f"serve-{name}.log"
        command = [sys.executable, "-c", "from ui.cli import main; main()", "serve", "--port", str(self.port)]
        self.process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=environment(settings, admin),
                                        stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=self.url, timeout=120)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> dict:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"replica {self.name} exited:\n{self.output()[-3000:]}"
            try:
                response = self.http.get("/readyz", timeout=10)
                if response.status_code == 200:
                    return response.json()
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"replica {self.name} not ready after {START_TIMEOUT_S} s:\n{self.output()[-3000:]}")

    def version(self) -> str:
        return self.http.get("/readyz").json()["index_version"]

    def ask(self, question: str) -> tuple[dict, str]:
        """The answer's JSON and the X-Index-Version it came with."""
        response = self.http.post("/api/ask", json={"question": question})
        assert response.status_code == 200, response.text[:300]
        return response.json(), response.headers["X-Index-Version"]

    def doc_ids(self) -> set[str]:
        return {document["doc_id"] for document in self.http.get("/api/documents").json()}

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


def wait_rebuilt(writer: Replica, ticket: int) -> str:
    """The writer's index version once the rebuild of `ticket` is live."""
    deadline = time.monotonic() + FOLLOW_TIMEOUT_S
    while time.monotonic() < deadline:
        ready = writer.http.get("/readyz").json()
        rebuild = ready["rebuild"]
        if rebuild["applied"] >= ticket:
            return ready["index_version"]
        assert rebuild["running"] or rebuild["queued"], f"rebuild failed: {rebuild['last']}"
        time.sleep(0.2)
    raise AssertionError(f"rebuild {ticket} not live after {FOLLOW_TIMEOUT_S} s:\n{writer.output()[-3000:]}")


def wait_following(reader: Replica, version: str) -> float:
    """Seconds until `reader` serves `version`."""
    started = time.monotonic()
    while time.monotonic() - started < FOLLOW_TIMEOUT_S:
        if reader.version() == version:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"replica {reader.name} still serves {reader.version()}, not {version}:\n"
                         f"{reader.output()[-3000:]}")


def cited(answer: dict) -> set[str]:
    return {citation["doc_id"] for citation in answer["citations"]}


def shared_copy(work: Path, seed_index_dir: Path) -> Settings:
    """A throwaway corpus, catalogue and index directory that both replicas serve."""
    settings = copy_seed_corpus(work, cache_dir=PROJECT_ROOT / "var" / "cache")
    shutil.copytree(seed_index_dir, settings.index.index_dir)
    return settings


def test_a_build_published_by_one_replica_reaches_the_other_without_a_restart(tmp_path, seed_index_dir):
    settings = shared_copy(tmp_path, seed_index_dir)
    writer = Replica(settings, "A", admin=True, work=tmp_path)
    reader = Replica(settings, "B", admin=False, work=tmp_path)
    try:
        first = writer.wait_ready()["index_version"]
        assert reader.wait_ready()["index_version"] == first

        upload = writer.http.post(
            "/api/documents", headers={"X-API-Key": ADMIN_KEY},
            files={"file": ("职工食堂运营补贴实施细则.txt", io.BytesIO(CANTEEN_POLICY.encode()))},
        )
        assert upload.status_code == 201, upload.text[:300]
        doc_id = upload.json()["document"]["doc_id"]
        added = wait_rebuilt(writer, upload.json()["ticket"])
        assert added != first
        followed_after = wait_following(reader, added)

        answer, answered_by = reader.ask(CANTEEN_QUESTION)
        assert answered_by == added
        assert doc_id in cited(answer), answer["citations"]
        assert doc_id in reader.doc_ids()

        removal = writer.http.delete(f"/api/documents/{doc_id}", headers={"X-API-Key": ADMIN_KEY})
        assert removal.status_code == 200, removal.text[:300]
        removed = wait_rebuilt(writer, removal.json()["ticket"])
        wait_following(reader, removed)

        answer, answered_by = reader.ask(CANTEEN_QUESTION)
        assert answered_by == removed
        assert doc_id not in cited(answer) | {passage["doc_id"] for passage in answer["passages"]}
        assert doc_id not in reader.doc_ids()
        assert reader.doc_ids() == writer.doc_ids()
    finally:
        writer.stop()
        reader.stop()
    print(f"\nreplica B served A's build {followed_after:.1f} s after A did")
    # B loaded each of A's two builds once; A never reloaded the builds it swapped in itself.
    assert reader.output().count("published by another process is live") == 2
    assert "published by another process is live" not in writer.output()


# --- the watcher in this process ------------------------------------------------------------------


def serving(settings: Settings) -> SimpleNamespace:
    """What the watcher needs of an assistant: its index (a real one, loaded from disk)."""
    from index import Index

    return SimpleNamespace(index=Index.load(settings.index.index_dir, settings))


def watched_app(settings: Settings, rebuilding: bool = False) -> SimpleNamespace:
    import threading

    rebuild = SimpleNamespace(status=lambda: SimpleNamespace(running=rebuilding))
    return SimpleNamespace(state=SimpleNamespace(
        settings=settings, assistant=serving(settings), assistant_lock=threading.Lock(), rebuild=rebuild,
    ))


def publish_copy(settings: Settings, source: Path, version: str, spoil: str | None = None) -> None:
    """Publishes a copy of the index at `source` as build `version`, its file `spoil` corrupted."""
    from index.store import MANIFEST, _swap_into_place

    index_dir = settings.index.index_dir
    staged = index_dir.parent / f"staged-{version}"
    shutil.copytree(source, staged)
    manifest = json.loads((staged / MANIFEST).read_text(encoding="utf-8"))
    manifest["version"] = version
    (staged / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    if spoil:
        with open(staged / spoil, "ab") as handle:
            handle.write(b" ")
    _swap_into_place(staged, index_dir)


def test_a_broken_build_on_disk_never_replaces_the_serving_one(tmp_path, seed_index_dir, caplog):
    from ui.reload import IndexWatcher

    settings = shared_copy(tmp_path, seed_index_dir)
    app = watched_app(settings)
    watcher = IndexWatcher(app, lambda: serving(settings), interval_s=1)
    good = app.state.assistant
    assert not watcher.check()  # nothing new

    publish_copy(settings, seed_index_dir, "broken-1", spoil="chunks.json")
    with caplog.at_level(logging.ERROR, logger="policyqa.reload"):
        assert not watcher.check()
    assert app.state.assistant is good
    assert "broken-1" in caplog.text
    assert not watcher.check()  # not re-read at every poll

    publish_copy(settings, seed_index_dir, "fixed-2")
    assert watcher.check()
    assert app.state.assistant.index.version == "fixed-2"


def test_readyz_shows_a_build_that_did_not_load_until_one_does(tmp_path, seed_index_dir):
    import threading

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from ui.api import router
    from ui.reload import IndexWatcher

    settings = shared_copy(tmp_path, seed_index_dir)
    app = FastAPI()
    app.include_router(router)
    app.state.settings, app.state.assistant_lock = settings, threading.Lock()
    app.state.assistant = SimpleNamespace(documents=[], **vars(serving(settings)))
    app.state.watcher = IndexWatcher(app, lambda: SimpleNamespace(documents=[], **vars(serving(settings))), 1)
    client = TestClient(app)
    good = client.get("/readyz").json()
    assert good["status"] == "ready" and good.get("reload") is None

    publish_copy(settings, seed_index_dir, "broken-3", spoil="chunks.json")
    assert not app.state.watcher.check()
    ready = client.get("/readyz")
    refused = ready.json()["reload"]["refused"]
    assert ready.status_code == 200 and ready.json()["index_version"] == good["index_version"]
    assert refused["version"] == "broken-3" and refused["serving"] == good["index_version"]
    assert refused["error"] and len(refused["error"]) <= 300 and refused["at"].endswith("+00:00")

    publish_copy(settings, seed_index_dir, "fixed-4")
    assert app.state.watcher.check()
    fixed = client.get("/readyz").json()
    assert fixed["index_version"] == "fixed-4" and fixed.get("reload") is None


def test_a_rebuilding_replica_leaves_the_build_to_its_own_rebuild(tmp_path, seed_index_dir):
    from ui.reload import IndexWatcher

    settings = shared_copy(tmp_path, seed_index_dir)
    app = watched_app(settings, rebuilding=True)
    loads = []
    watcher = IndexWatcher(app, lambda: loads.append(1) or serving(settings), interval_s=1)
    publish_copy(settings, seed_index_dir, "own-1")
    assert not watcher.check()
    assert loads == []


def test_the_reload_interval_is_a_service_setting(monkeypatch):
    monkeypatch.setenv("POLICYQA_INDEX_RELOAD_INTERVAL_S", "0")
    assert Settings().service.index_reload_interval_s == 0
    assert Settings(index_reload_interval_s=2.5).service.index_reload_interval_s == 2.5
    with pytest.raises(ValueError):
        Settings(index_reload_interval_s=-1)
