"""Shared, session-scoped fixtures: the real seed corpus, a real index built once into a
temporary directory, the real assistant over it, and one real server on 127.0.0.1.

Passage embeddings are cached by (embedder, text hash) in the project's `var/cache`, so the
first run of the suite on a machine embeds the seed corpus once (about a minute and a half
on 2 cores) and later runs reuse it.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from corpus.settings import PROJECT_ROOT, Settings


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
    return seed_settings.index_dir


@pytest.fixture(scope="session")
def seed_index(seed_index_dir: Path, seed_settings: Settings):
    from index import Index

    return Index.load(seed_index_dir, seed_settings)


@pytest.fixture(scope="session")
def assistant(seed_index, seed_settings: Settings):
    from qa import Assistant

    return Assistant(seed_index, seed_settings)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def live_server(assistant, seed_settings: Settings):
    """A real uvicorn server on 127.0.0.1 serving the API, the chat page and the bots."""
    import uvicorn

    from ui.app import create_app

    port = free_port()
    server_settings = seed_settings.model_copy(update={"port": port})
    app = create_app(server_settings, assistant=assistant)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="session")
def serve_app(assistant, seed_settings: Settings):
    """A factory for extra real servers with their own settings (bot tokens, API keys) or
    a wrapped assistant: `serve_app(assistant=None, **settings_update) -> base URL`. Each
    runs `ui.app.create_app` on its own port; all stop at the end of the session."""
    import uvicorn

    from ui.app import create_app

    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(app_assistant=None, **settings_update) -> str:
        port = free_port()
        app_settings = seed_settings.model_copy(update={**settings_update, "port": port})
        app = create_app(app_settings, assistant=app_assistant or assistant)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 60
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{port}"

    yield start
    for server, _ in servers:
        server.should_exit = True
    for _, thread in servers:
        thread.join(timeout=10)
