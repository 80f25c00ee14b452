"""Run the web app in a background thread on a loopback port (tests and benchmarks)."""

from __future__ import annotations

import socket
import threading
import time

from fastapi import FastAPI


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class BackgroundServer:
    """A real uvicorn server for `app` on 127.0.0.1, started in a daemon thread.

        with BackgroundServer(app) as server:
            httpx.get(server.url + "/healthz")
    """

    def __init__(self, app: FastAPI, port: int | None = None, start_timeout_s: float = 60):
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        settings = getattr(app.state, "settings", None)
        self._server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False,
                lifespan="on", server_header=False, proxy_headers=True,
                # as `policyqa serve` does: X-Forwarded-For is believed only from these
                forwarded_allow_ips=settings.service.forwarded_allow_ips if settings else None,
            )
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._start_timeout_s = start_timeout_s

    def start(self) -> "BackgroundServer":
        """:raises RuntimeError: the server did not come up in time."""
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout_s
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
