"""Rebuilding beside a serving index: build a new version, load it fully, then publish it.

`build_staged` builds into a fresh workspace next to `settings.index.index_dir` (never touching
it) and loads the result with every check `Index.load` makes, so a build that fails, or
produces an index that does not load, changes nothing a server or another process reads.
`publish` then moves the checked version into `settings.index.index_dir` with the same locked
swap `build_index` uses. Passage vectors come from the embedding cache, so a rebuild after
adding one document embeds only that document's passages.

With `settings.index.rebuild_isolated` (the default) the build itself runs in a worker process,
started once per process and kept: at `settings.index.rebuild_nice` lower CPU priority, on at most
`settings.index.rebuild_cpus` CPUs, with its own interpreter lock. A server answering questions
while staff change documents then loses little CPU to the rebuild: jieba and the passage
embedder run there, and the server only loads the finished version (tens of ms).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from corpus.models import Document
from corpus.settings import Settings
from index.store import BuildReport, Index, _swap_into_place, build_index

_INDEX_NAME = "index"
_PR_SET_PDEATHSIG = 1  # prctl(2)
# The parent-death signal is asked for before the (slow) imports: a parent killed while
# the worker starts takes the worker with it too.
_WORKER_CODE = (
    "import contextlib, ctypes, os, signal, sys\n"
    "with contextlib.suppress(OSError, AttributeError):\n"
    f"    ctypes.CDLL(None).prctl({_PR_SET_PDEATHSIG}, signal.SIGKILL)\n"
    "if os.getppid() != int(sys.argv[3]):\n"
    "    os._exit(1)\n"
    "from index.rebuild import worker_main\n"
    "worker_main()\n"
)
log = logging.getLogger("policyqa.rebuild")


@dataclass(frozen=True)
class StagedIndex:
    """A complete, loaded index version waiting in `path` to be published."""

    index: Index
    report: BuildReport
    path: Path
    workspace: Path  # the staging folder holding `path` (and build_index's lock file)


def build_staged(
    settings: Settings, documents: Sequence[Document] | None = None, progress: bool = False
) -> StagedIndex:
    """Builds an index of `documents` (default: the corpus in settings.corpus.corpus_dir) in a new
    workspace beside settings.index.index_dir and loads it. The workspace is removed on failure.

    :raises IndexBuildError: nothing to index.
    :raises EmbedderError: the embedder cannot be loaded.
    :raises IndexLoadError: the new index does not load back.
    :raises RebuildWorkerError: the worker process died during the build.
    """
    target = Path(settings.index.index_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_workspaces(target)
    workspace = target.parent / f"{_staging_prefix(target)}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    workspace.mkdir()
    staged_settings = settings.model_copy(update={"index_dir": workspace / _INDEX_NAME})
    try:
        if settings.index.rebuild_isolated:
            report = _worker.build(staged_settings, documents)
        else:
            report = build_index(staged_settings, progress=progress, documents=documents)
        index = Index.load(staged_settings.index.index_dir, staged_settings)
    except BaseException:
        shutil.rmtree(workspace, ignore_errors=True)
        raise
    return StagedIndex(index=index, report=report, path=staged_settings.index.index_dir, workspace=workspace)


def publish(staged: StagedIndex, settings: Settings) -> None:
    """Moves the staged version into settings.index.index_dir, replacing the previous one in one
    locked swap (readers see the old or the new index, never none), and removes the
    workspace. The loaded `staged.index` keeps working: it holds everything in memory."""
    try:
        _swap_into_place(staged.path, Path(settings.index.index_dir))
    finally:
        discard(staged)


def discard(staged: StagedIndex) -> None:
    """Removes what is left of the staging workspace."""
    shutil.rmtree(staged.workspace, ignore_errors=True)


def _staging_prefix(target: Path) -> str:
    return f".{target.name}.staging-"


def _remove_abandoned_workspaces(target: Path) -> None:
    """Deletes staging workspaces whose building process is gone (killed mid-build)."""
    prefix = _staging_prefix(target)
    for workspace in target.parent.glob(prefix + "*"):
        pid_text = workspace.name[len(prefix) :].split("-", 1)[0]
        if not pid_text.isdigit():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(workspace, ignore_errors=True)
        except PermissionError:
            continue  # alive, another user's


class RebuildWorkerError(RuntimeError):
    """The rebuild worker process died (killed, out of memory) before it answered."""


def worker_main() -> None:
    """The worker process (`python -c _WORKER_CODE <nice> <cpus> <parent pid>`): lowers its
    own priority, then runs one `build_index` per request read from stdin, answering on
    stdout (pickled), until stdin closes or the parent dies."""
    nice, cpus = int(sys.argv[1]), int(sys.argv[2])
    _die_with_parent(int(sys.argv[3]))
    # Answers go to the original stdout; anything a library prints goes to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    requests = sys.stdin.buffer
    if nice:
        os.nice(nice)
    if cpus and hasattr(os, "sched_setaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        if len(allowed) > cpus:  # the last CPUs: the first ones take most other work
            os.sched_setaffinity(0, allowed[-cpus:])
    while True:
        try:
            settings_data, documents_data = pickle.load(requests)
        except (EOFError, OSError, pickle.UnpicklingError):
            return
        try:
            settings = Settings.model_validate(settings_data)
            documents = (None if documents_data is None
                         else [Document.model_validate(data) for data in documents_data])
            answer = ("ok", build_index(settings, progress=False, documents=documents))
        except Exception as error:  # handed to the parent, raised there
            answer = ("error", error)
        try:
            data = pickle.dumps(answer)
        except Exception as error:  # an exception that does not pickle
            data = pickle.dumps(("error", RuntimeError(f"{type(answer[1]).__name__}: {answer[1]}")
                                 if answer[0] == "error" else RuntimeError(f"unpicklable result: {error}")))
        try:
            answers.write(data)
            answers.flush()
        except BrokenPipeError:  # the parent died while we built: nobody waits for this
            return


def _die_with_parent(parent: int) -> None:
    """Ends the worker when its parent dies (a `kill -9` included), so no orphan goes on
    writing into a workspace that the next build clears away: the kernel sends SIGKILL
    (Linux PR_SET_PDEATHSIG, at once, however starved this low-priority process is), and
    elsewhere a thread watches for the parent to change."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class _RebuildWorker:
    """The process `build_staged` hands builds to; started on first use, restarted if it
    died, one build at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._spawns: queue.SimpleQueue = queue.SimpleQueue()
        self._spawner: threading.Thread | None = None

    def build(self, settings: Settings, documents: Sequence[Document] | None) -> BuildReport:
        """`build_index(settings, documents=documents)` in the worker.

        :raises IndexBuildError, EmbedderError: as build_index does.
        :raises RebuildWorkerError: the worker died before it answered.
        """
        request = (
            settings.flat_dump(mode="json"),
            None if documents is None else [document.model_dump(mode="json") for document in documents],
        )
        with self._lock:
            process = self._started(settings)
            try:
                pickle.dump(request, process.stdin)
                process.stdin.flush()
                status, value = pickle.load(process.stdout)
            except (EOFError, OSError, pickle.UnpicklingError) as error:
                self._stop()
                raise RebuildWorkerError(
                    f"重建索引的子进程意外退出 / the rebuild worker died ({type(error).__name__})"
                ) from None
        if status == "error":
            raise value
        return value

    def _started(self, settings: Settings) -> subprocess.Popen:
        if self._process is not None and self._process.poll() is None:
            return self._process
        self._stop()
        command = [sys.executable, "-c", _WORKER_CODE,
                   str(settings.index.rebuild_nice), str(settings.index.rebuild_cpus), str(os.getpid())]
        self._process = self._spawn(command)
        log.info("rebuild worker %d started (nice +%d, %s CPU)", self._process.pid,
                 settings.index.rebuild_nice, settings.index.rebuild_cpus or "every")
        return self._process

    def _spawn(self, command: list[str]) -> subprocess.Popen:
        """Starts the worker from one thread that lives as long as this process: the
        kernel's parent-death signal fires when the *thread* that started a child ends, and
        a server's rebuild threads come and go."""
        if self._spawner is None:
            self._spawner = threading.Thread(target=self._spawn_forever, name="policyqa-rebuild-spawner",
                                             daemon=True)
            self._spawner.start()
        started: Future = Future()
        self._spawns.put((command, started))
        return started.result()

    def _spawn_forever(self) -> None:
        while True:
            command, started = self._spawns.get()
            try:
                started.set_result(subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE))
            except BaseException as error:  # handed to the caller
                started.set_exception(error)

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait(timeout=30)
            for stream in (process.stdin, process.stdout):
                stream.close()


_worker = _RebuildWorker()
