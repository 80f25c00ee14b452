"""Crash safety (issue 15, item 6): `kill -9` at varied moments of a real `policyqa serve`
busy storing uploads and rebuilding its index, and of a real `policyqa build`, then a
restart. Every upload answered 201 is still there, the catalogue parses, the index on disk
loads, and after the restart the served index matches the catalogue (rebuilt on start).

Each run prints its figures (run with -s to see them): kills, uploads acknowledged, lost.
Passage embeddings come from the shared cache in var/cache, so only the passages of the
documents written here are embedded.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from corpus.settings import PROJECT_ROOT, Settings
from helpers import copy_seed_corpus, server_environment

ADMIN_KEY = "crash-test-key-" + uuid.uuid4().hex[:12]
RUN_MARK = uuid.uuid4().hex[:10]
START_TIMEOUT_S = 180
# Seconds after the first upload of a round's answer: while the next uploads are stored,
# while the rebuild loads the passage embedder, embeds, writes, publishes.
SERVE_KILL_DELAYS_S = (0.0, 0.5, 1.5, 3.0)
BUILD_KILL_DELAYS_S = (0.5, 1.5, 3.0)
UPLOADS_PER_ROUND = 3


def notice(number: int) -> str:
    """A three-passage document, new to the embedding cache on every run."""
    return (
        f"虹桥商务区第{number}批企业服务事项清单的通知（登记号 CS-{RUN_MARK}-{number}）\n"
        + "".join(
            f"第{part}条 第{number}批第{part}项服务事项由管理委员会企业服务中心受理，"
            f"申请材料包括营业执照、申请表和相关证明材料，受理后十个工作日内办结，"
            f"办理结果通过“虹桥企业服务”平台告知申请企业，编号 {RUN_MARK}-{number}-{part}。\n"
            for part in range(1, 6)
        )
    )


def environment(settings: Settings) -> dict[str, str]:
    return server_environment(settings, POLICYQA_ADMIN_API_KEY=ADMIN_KEY)


def policyqa(settings: Settings, *args: str, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-c", "from ui.cli import main; main()", *args]
    return subprocess.Popen(command, cwd=PROJECT_ROOT, env=environment(settings),
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def wait_ready(url: str, server: subprocess.Popen, log: Path, idle: bool = False) -> dict:
    """/readyz once an index is loaded (and, with `idle`, no rebuild is running or queued)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert server.poll() is None, "the server exited:\n" + log.read_text(errors="replace")[-3000:]
        try:
            response = httpx.get(f"{url}/readyz", timeout=10)
            body = response.json()
            rebuild = body.get("rebuild", {})
            if response.status_code == 200 and not (idle and (rebuild.get("running") or rebuild.get("queued"))):
                return body
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"not ready after {START_TIMEOUT_S} s:\n" + log.read_text(errors="replace")[-3000:])


def kill(process: subprocess.Popen) -> bool:
    """SIGKILL; True when the process was still running."""
    alive = process.poll() is None
    if alive:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    return alive


def check_disk_state(settings: Settings, acknowledged: dict[str, int]) -> None:
    """What must hold after any kill: the catalogue parses, every acknowledged upload is in
    the corpus with its text, and the index on disk loads."""
    from corpus.library import Library
    from index import Index

    json.loads(settings.corpus.catalogue_path.read_text(encoding="utf-8"))
    loaded = Library(settings).load()
    texts = {document.doc_id: document.text for document in loaded.documents}
    for doc_id, number in acknowledged.items():
        assert doc_id in texts, f"acknowledged upload {doc_id} lost"
        assert f"CS-{RUN_MARK}-{number}" in texts[doc_id]
    Index.load(settings.index.index_dir, settings)


def test_kill_9_of_serve_during_upload_rebuilds_loses_no_acknowledged_upload(tmp_path, free_port):
    settings = copy_seed_corpus(tmp_path, cache_dir=PROJECT_ROOT / "var" / "cache")
    log = tmp_path / "serve.log"
    acknowledged: dict[str, int] = {}  # doc_id -> notice number
    numbers = iter(range(1, 1000))
    kills = 0
    for delay in SERVE_KILL_DELAYS_S:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = policyqa(settings, "serve", "--port", str(port), log=log)
        wait_ready(url, server, log)
        first_answer = threading.Event()

        def upload_until_killed() -> None:
            with httpx.Client(base_url=url, timeout=60) as http:
                for _ in range(UPLOADS_PER_ROUND):
                    number = next(numbers)
                    try:
                        response = http.post(
                            "/api/documents", headers={"X-API-Key": ADMIN_KEY},
                            files={"file": (f"清单{number}.txt", io.BytesIO(notice(number).encode()))},
                        )
                    except httpx.HTTPError:
                        first_answer.set()
                        return  # killed: this upload was never acknowledged
                    if response.status_code == 201:
                        acknowledged[response.json()["document"]["doc_id"]] = number
                    first_answer.set()

        uploader = threading.Thread(target=upload_until_killed)
        uploader.start()
        first_answer.wait(timeout=60)
        time.sleep(delay)
        kills += kill(server)
        uploader.join(timeout=60)
        check_disk_state(settings, acknowledged)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = policyqa(settings, "serve", "--port", str(port), log=log)
    try:
        wait_ready(url, server, log, idle=True)  # the start-up rebuild catches up
        served = {d["doc_id"] for d in httpx.get(f"{url}/api/documents", timeout=30).json()}
        from corpus.library import Library

        on_disk = {document.doc_id for document in Library(settings).load().documents}
        assert served == on_disk
        lost = set(acknowledged) - served
        reindex = httpx.post(f"{url}/api/reindex", headers={"X-API-Key": ADMIN_KEY}, timeout=30)
        assert reindex.status_code == 202
        wait_ready(url, server, log, idle=True)
    finally:
        kill(server)
    print(f"\nserve: kills {kills}, uploads acknowledged {len(acknowledged)}, lost {len(lost)}")
    assert kills == len(SERVE_KILL_DELAYS_S)
    assert len(acknowledged) >= len(SERVE_KILL_DELAYS_S)  # each round had its upload answered
    assert not lost
    # The rebuild after the kills cleared what the killed processes left beside the index.
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".index.")]
    assert leftovers == [".index.lock"], leftovers


def test_kill_9_of_policyqa_build_leaves_an_index_that_loads(tmp_path):
    from corpus.library import Library
    from index import Index, build_index

    settings = copy_seed_corpus(tmp_path, cache_dir=PROJECT_ROOT / "var" / "cache")
    build_index(settings, progress=False)
    versions = {Index.load(settings.index.index_dir, settings).version}
    log = tmp_path / "build.log"
    kills = 0
    for round_number, delay in enumerate(BUILD_KILL_DELAYS_S, start=1):
        source = tmp_path / f"清单{round_number}.txt"
        source.write_text(notice(100 + round_number), encoding="utf-8")
        Library(settings).add(source)  # the build now has passages to embed
        builder = policyqa(settings, "build", "--no-progress", log=log)
        time.sleep(delay)
        kills += kill(builder)
        index = Index.load(settings.index.index_dir, settings)  # the old version or a complete new one
        versions.add(index.version)

    finished = policyqa(settings, "build", "--no-progress", log=log)
    assert finished.wait(timeout=300) == 0, log.read_text(errors="replace")[-3000:]
    index = Index.load(settings.index.index_dir, settings)
    assert {d.doc_id for d in index.documents} == {d.doc_id for d in Library(settings).load().documents}
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".index.")]
    assert leftovers == [".index.lock"], leftovers
    print(f"\nbuild: kills {kills} (of {len(BUILD_KILL_DELAYS_S)} tries), index versions seen {len(versions)}")
    assert kills >= 2  # the build was still running when killed, at least at the early delays


def test_a_killed_rebuild_worker_changes_nothing_and_the_next_build_restarts_it(tmp_path):
    from corpus.library import Library
    from index import Index, build_index
    from index.rebuild import RebuildWorkerError, _worker, build_staged, publish

    settings = copy_seed_corpus(tmp_path, cache_dir=PROJECT_ROOT / "var" / "cache")
    build_index(settings, progress=False)
    manifest = (settings.index.index_dir / "manifest.json").read_bytes()
    source = tmp_path / "清单.txt"
    source.write_text(notice(900), encoding="utf-8")
    added = Library(settings).add(source)
    outcome: dict = {}

    def build() -> None:
        try:
            outcome["staged"] = build_staged(settings)
        except Exception as error:
            outcome["error"] = error

    builder = threading.Thread(target=build)
    builder.start()
    deadline = time.monotonic() + 120
    while _worker._process is None and time.monotonic() < deadline:
        time.sleep(0.01)
    victim = _worker._process
    time.sleep(1.0)  # starting, or embedding the new passages
    if victim.poll() is None:
        os.kill(victim.pid, signal.SIGKILL)
    builder.join(timeout=300)
    if "staged" in outcome:  # it won the race: the version is complete and unpublished
        pytest.skip("the build finished before the worker could be killed")
    assert isinstance(outcome["error"], RebuildWorkerError)
    assert (settings.index.index_dir / "manifest.json").read_bytes() == manifest
    assert not list(tmp_path.glob(".index.staging-*"))

    staged = build_staged(settings)  # a new worker
    publish(staged, settings)
    assert _worker._process is not victim
    assert added.document.doc_id in {d.doc_id for d in Index.load(settings.index.index_dir, settings).documents}


WRITER = """
import sys
from corpus.atomic import atomic_write_text
path, size = sys.argv[1], int(sys.argv[2])
for round_number in range(10**6):
    atomic_write_text(path, str(round_number % 10) * size)
"""


def test_kill_9_during_atomic_writes_leaves_one_whole_version(tmp_path):
    """A process rewriting one file as fast as it can, killed at varied moments: the file
    always holds one complete version, and only hidden temporary files are left beside it."""
    target = tmp_path / "catalogue.json"
    size = 2_000_000  # large enough that a kill often lands mid-write
    for delay in (0.05, 0.2, 0.4, 0.7, 1.0):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(size)], cwd=PROJECT_ROOT)
        deadline = time.monotonic() + 60
        while not target.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        assert kill(writer)
        text = target.read_text()
        assert len(text) == size and len(set(text)) == 1
    assert all(path.name.startswith(".catalogue.json.") for path in tmp_path.iterdir() if path != target)


def test_a_failed_atomic_write_keeps_the_old_file_and_its_mode(tmp_path):
    from corpus.atomic import atomic_write_bytes

    target = tmp_path / "entry.json"
    target.write_bytes(b"old")
    target.chmod(0o640)

    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [target]
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and target.stat().st_mode & 0o777 == 0o640
    atomic_write_bytes(tmp_path / "fresh.json", b"{}")
    assert (tmp_path / "fresh.json").stat().st_mode & 0o777 == 0o644


@pytest.fixture
def free_port():
    from ui.server import free_port as pick

    return pick
