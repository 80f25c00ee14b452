"""Helpers the test modules share (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
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


def server_environment(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a `policyqa` subprocess over `settings`' throwaway paths, with the
    rate limits off (tests send bursts); `extra` adds or overrides variables."""
    return {
        **os.environ,
        "POLICYQA_CORPUS_DIR": str(settings.corpus.corpus_dir),
        "POLICYQA_CATALOGUE_PATH": str(settings.corpus.catalogue_path),
        "POLICYQA_INDEX_DIR": str(settings.index.index_dir),
        "POLICYQA_DATA_DIR": str(settings.index.data_dir),
        "POLICYQA_FEEDBACK_DB": str(settings.service.feedback_db),
        "POLICYQA_CACHE_DIR": str(settings.index.cache_dir),
        "POLICYQA_RATE_LIMIT_PER_S": "0",
        "POLICYQA_RATE_LIMIT_BURST": "0",
        **extra,
    }
