"""uvicorn in-process: the socket bound before the server starts (so port 0 gives a known free port), a
graceful stop, and the server run either on the caller's event loop (`serve`) or on a thread (tests).

uvicorn's `Server.serve` catches SIGINT/SIGTERM itself (main thread only), finishes the requests in
flight, and then raises the caught signal again against the handler that was installed before it:
`signal-agent serve` installs its own first, so that raise reaches its shutdown path (worker,
alerts, lock) instead of ending the process on the spot.
"""

from __future__ import annotations

import asyncio
import socket
import threading

import uvicorn
from fastapi import FastAPI


class WebhookServer:
    """`app` served on `host:port` (port 0: a free one, see `port`)."""

    def __init__(self, app: FastAPI, host: str, port: int, *, log_level: str = "warning",
                 graceful_s: float = 10.0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except OSError:
            self.socket.close()
            raise
        self.host = host
        self.port: int = self.socket.getsockname()[1]
        config = uvicorn.Config(app, log_level=log_level, lifespan="off", timeout_graceful_shutdown=graceful_s,
                                server_header=False)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def serve(self) -> None:
        """Serve until `stop()` or a signal (on the caller's loop, main thread: uvicorn handles the signals)."""
        await self.server.serve(sockets=[self.socket])

    def stop(self) -> None:
        self.server.should_exit = True

    # --- on a thread (tests, embedding) ----------------------------------------------------------------

    def start_thread(self, timeout_s: float = 10.0) -> WebhookServer:
        self._thread = threading.Thread(target=lambda: asyncio.run(self.serve()), name="webhook-http", daemon=True)
        self._thread.start()
        for _ in range(int(timeout_s / 0.01)):
            if self.server.started or not self._thread.is_alive():
                break
            threading.Event().wait(0.01)
        if not self.server.started:
            raise RuntimeError(f"the webhook server did not start on {self.url}")
        return self

    def stop_thread(self, timeout_s: float = 10.0) -> None:
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.socket.close()
