"""Picking up index builds another process published: replicas sharing one index directory.

Several `policyqa serve` replicas may serve one index directory that one writer rebuilds:
`policyqa build` on one host, or the replica with the admin key, which swaps its own builds
in itself (`ui.kb.RebuildManager`). Every `settings.service.index_reload_interval_s` seconds
each replica's `IndexWatcher` reads the version the directory's manifest names. When that is
not the version being served, the watcher loads the build into a new `Assistant`, in its own
thread, and swaps it in with one assignment, as the replica's own rebuilds do: a request in
flight finishes on the assistant it began with, and none sees a half-loaded index. A build
that does not load is logged and the serving one stays (tried again after
`REFUSED_RETRY_S`, or as soon as another build is published); /readyz shows it under
"reload" until a build loads, so a replica left on an old build can be found.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI

from index.store import published_version

if TYPE_CHECKING:
    from qa import Assistant

log = logging.getLogger("policyqa.reload")

# A build that did not load (a Milvus briefly out of reach, a corrupt file) is tried again
# this long after, so a broken directory is not re-read every few seconds.
REFUSED_RETRY_S = 60.0


# How much of a load error /readyz shows: enough to tell a missing file from a refused
# connection, not a whole traceback.
MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class RefusedBuild:
    """A published build that did not load, while the replica went on serving `serving`."""

    version: str
    error: str
    at: str  # ISO 8601, UTC
    serving: str | None


def _version(assistant: "Assistant | None") -> str | None:
    return getattr(getattr(assistant, "index", None), "version", None)


class IndexWatcher:
    """Keeps `app.state.assistant` on the build published in `app.state.settings.index.index_dir`.

    `load` returns a new assistant over that directory (`Assistant.load`). Swaps are made
    under `app.state.assistant_lock`, which the app's own rebuilds (`ui.kb.install`) hold too.

    :raises ValueError: `interval_s` is not positive.
    """

    def __init__(self, app: FastAPI, load: Callable[[], "Assistant"], interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.app = app
        self.interval_s = interval_s
        self._load = load
        self._index_dir = Path(app.state.settings.index.index_dir)
        self.refused: RefusedBuild | None = None  # the last build that did not load, until one does
        self._retry_at = 0.0  # monotonic time after which `refused` is tried again
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="policyqa-index-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)  # a load in progress may go on; the thread is a daemon

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # keep watching; the serving assistant stays
                log.exception("checking %s for a new index build failed", self._index_dir)

    def _rebuilding(self) -> bool:
        manager = getattr(self.app.state, "rebuild", None)
        return manager is not None and manager.status().running

    def check(self) -> bool:
        """Swaps in the build on disk when it is not the one served, unless this process is
        rebuilding (its rebuild hands over the build it publishes, so that one is never
        loaded twice). Returns True when it swapped."""
        serving = self.app.state.assistant
        on_disk = published_version(self._index_dir)
        if on_disk is None or on_disk == _version(serving) or self._rebuilding():
            return False
        if self.refused and self.refused.version == on_disk and time.monotonic() < self._retry_at:
            return False
        try:
            loaded = self._load()
        except Exception as error:  # a broken or partial build never replaces a good one
            self._retry_at = time.monotonic() + REFUSED_RETRY_S
            self.refused = RefusedBuild(
                version=on_disk,
                error=f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS],
                at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                serving=_version(serving),
            )
            log.error("index %s in %s not loaded, still serving %s: %s",
                      on_disk, self._index_dir, _version(serving), error)
            return False
        with self.app.state.assistant_lock:
            if self.app.state.assistant is not serving or self._rebuilding():
                return False  # our own rebuild went live meanwhile (or is about to)
            if _version(loaded) == _version(serving):
                return False
            self.app.state.assistant = loaded
        self.refused = None
        log.info("index %s published by another process is live (was %s)",
                 _version(loaded), _version(serving))
        return True


def reload_fields(app: FastAPI) -> dict:
    """What /readyz adds about builds of other processes: {"reload": {"refused": ...}} while
    the last one published did not load and the replica serves an older one."""
    watcher = getattr(app.state, "watcher", None)
    refused = getattr(watcher, "refused", None)
    return {"reload": {"refused": asdict(refused)}} if refused is not None else {}
