"""Rebuilding beside a serving index: build a new version, load it fully, then publish it.

`build_staged` builds into a fresh workspace next to `settings.index_dir` (never touching
it) and loads the result with every check `Index.load` makes, so a build that fails, or
produces an index that does not load, changes nothing a server or another process reads.
`publish` then moves the checked version into `settings.index_dir` with the same locked
swap `build_index` uses. Passage vectors come from the embedding cache, so a rebuild after
adding one document embeds only that document's passages.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from corpus.models import Document
from corpus.settings import Settings
from index.store import BuildReport, Index, _swap_into_place, build_index

_INDEX_NAME = "index"


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
    """Builds an index of `documents` (default: the corpus in settings.corpus_dir) in a new
    workspace beside settings.index_dir and loads it. The workspace is removed on failure.

    :raises IndexBuildError: nothing to index.
    :raises EmbedderError: the embedder cannot be loaded.
    :raises IndexLoadError: the new index does not load back.
    """
    target = Path(settings.index_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_workspaces(target)
    workspace = target.parent / f"{_staging_prefix(target)}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    workspace.mkdir()
    staged_settings = settings.model_copy(update={"index_dir": workspace / _INDEX_NAME})
    try:
        report = build_index(staged_settings, progress=progress, documents=documents)
        index = Index.load(staged_settings.index_dir, staged_settings)
    except BaseException:
        shutil.rmtree(workspace, ignore_errors=True)
        raise
    return StagedIndex(index=index, report=report, path=staged_settings.index_dir, workspace=workspace)


def publish(staged: StagedIndex, settings: Settings) -> None:
    """Moves the staged version into settings.index_dir, replacing the previous one in one
    locked swap (readers see the old or the new index, never none), and removes the
    workspace. The loaded `staged.index` keeps working: it holds everything in memory."""
    try:
        _swap_into_place(staged.path, Path(settings.index_dir))
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
