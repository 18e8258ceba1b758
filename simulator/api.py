"""The simulator's small REST API, served while it produces.

* ``POST /config/rate`` with ``{"messages_per_second": N}`` changes the rate live.
* ``GET /stats`` reports produced, failed, current and achieved rate.
* ``GET /metrics`` serves the same figures for Prometheus.
* ``POST /inject/burst`` (live payments only) starts one velocity burst now: a fresh
  account pays 3 to 6 times within seconds, so the pipeline must alert it once.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Optional, Tuple

__all__ = ["ControlServer"]

MAX_RATE = 1_000_000


class ControlServer:
    """A threaded HTTP server bound to ``host:port`` (port 0: a free one)."""

    def __init__(
        self,
        stats: Callable[[], Dict[str, Any]],
        set_rate: Callable[[float], None],
        metrics: Optional[Callable[[], Tuple[bytes, str]]] = None,
        host: str = "127.0.0.1",
        port: int = 0,
        inject_burst: Optional[Callable[[], int]] = None,
    ) -> None:
        handler = _handler(stats, set_rate, metrics, inject_burst)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="simulator-api", daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(
    stats: Callable[[], Dict[str, Any]],
    set_rate: Callable[[float], None],
    metrics: Optional[Callable[[], Tuple[bytes, str]]],
    inject_burst: Optional[Callable[[], int]] = None,
) -> type:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by design
            return

        def _reply(self, code: int, body: Dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path == "/stats":
                self._reply(200, stats())
            elif self.path == "/metrics" and metrics is not None:
                data, content_type = metrics()
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self._reply(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            if self.path == "/inject/burst" and inject_burst is not None:
                self._reply(200, {"bursts_requested": inject_burst()})
                return
            if self.path != "/config/rate":
                self._reply(404, {"error": "not found"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(min(length, 4096)) or b"{}")
                rate = body["messages_per_second"]
                if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= MAX_RATE:
                    raise ValueError(f"messages_per_second must be a number in [0, {MAX_RATE}]")
            except (ValueError, KeyError, TypeError) as err:
                self._reply(
                    400,
                    {
                        "error": str(err)
                        if not isinstance(err, KeyError)
                        else "messages_per_second is required"
                    },
                )
                return
            set_rate(float(rate))
            self._reply(200, {"messages_per_second": rate})

    return Handler
