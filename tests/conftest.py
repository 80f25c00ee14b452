"""Shared, session-scoped fixtures: the real seed corpus, a real index built once into a
temporary directory, the real assistant over it, and one real server on 127.0.0.1.

Passage embeddings are cached by (embedder, text hash) in the project's `var/cache`, so the
first run of the suite on a machine embeds the seed corpus once (about a minute and a half
on 2 cores) and later runs reuse it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests send bursts from one address that a real client would not; the rate limits are off
# for every server the suite starts, except where tests/test_ratelimit.py and
# tests/test_replay.py turn them on. Set before Settings is first built.
os.environ.setdefault("POLICYQA_RATE_LIMIT_PER_S", "0")
os.environ.setdefault("POLICYQA_BOT_RATE_LIMIT_PER_S", "0")

from corpus.settings import PROJECT_ROOT, Settings  # noqa: E402


@pytest.fixture(scope="session")
def seed_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    work = tmp_path_factory.mktemp("policyqa")
    return Settings(
        index_dir=work / "index",
        data_dir=work,
        cache_dir=PROJECT_ROOT / "var" / "cache",
        feedback_db=work / "feedback.sqlite3",
    )


@pytest.fixture(scope="session")
def seed_corpus(seed_settings: Settings):
    from corpus import load_corpus

    return load_corpus(seed_settings)


@pytest.fixture(scope="session")
def seed_index_dir(seed_settings: Settings) -> Path:
    from index import build_index

    build_index(seed_settings, progress=False)
    return seed_settings.index.index_dir


@pytest.fixture(scope="session")
def seed_index(seed_index_dir: Path, seed_settings: Settings):
    from index import Index

    return Index.load(seed_index_dir, seed_settings)


@pytest.fixture(scope="session")
def assistant(seed_index, seed_settings: Settings):
    from qa import Assistant

    return Assistant.over(seed_index, seed_settings)


@pytest.fixture(scope="session")
def live_server(assistant, seed_settings: Settings):
    """A real uvicorn server on 127.0.0.1 serving the API, the chat page and the bots."""
    from ui.app import create_app
    from ui.server import BackgroundServer, free_port

    port = free_port()
    app = create_app(seed_settings.model_copy(update={"port": port}), assistant=assistant)
    with BackgroundServer(app, port) as server:
        yield server.url


@pytest.fixture(scope="session")
def serve_app(assistant, seed_settings: Settings):
    """A factory for extra real servers with their own settings (bot tokens, API keys) or
    a wrapped assistant: `serve_app(assistant=None, **settings_update) -> base URL`. Each
    runs `ui.app.create_app` on its own port; all stop at the end of the session."""
    from ui.app import create_app
    from ui.server import BackgroundServer, free_port

    servers: list[BackgroundServer] = []

    def start(app_assistant=None, **settings_update) -> str:
        port = free_port()
        app_settings = seed_settings.model_copy(update={**settings_update, "port": port})
        app = create_app(app_settings, assistant=app_assistant or assistant)
        servers.append(BackgroundServer(app, port).start())
        return servers[-1].url

    yield start
    for server in servers:
        server.stop()
