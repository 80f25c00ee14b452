"""Helpers the test modules share (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import shutil
from pathlib import Path

from corpus.settings import PROJECT_ROOT, Settings


def copy_seed_corpus(work: Path, cache_dir: Path | None = None, **overrides) -> Settings:
    """Settings over a throwaway copy of the seed corpus under `work` (copied once), so a
    test may add and remove documents; `cache_dir` defaults to one under `work`."""
    corpus_dir = work / "corpus"
    if not corpus_dir.exists():
        shutil.copytree(PROJECT_ROOT / "corpus" / "documents", corpus_dir)
        shutil.copyfile(PROJECT_ROOT / "corpus" / "catalogue.json", work / "catalogue.json")
    return Settings(
        corpus_dir=corpus_dir,
        catalogue_path=work / "catalogue.json",
        index_dir=work / "index",
        data_dir=work,
        cache_dir=cache_dir or work / "cache",
        feedback_db=work / "feedback.sqlite3",
        **overrides,
    )
