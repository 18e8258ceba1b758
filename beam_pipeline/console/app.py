"""The console's web server (Flask): the page, its assets, ``/api/snapshot`` and the alert
feed ``/api/alerts`` (server-sent events).

**Safe by default.** It binds 127.0.0.1. Bound to any other address it refuses to start
without ``--token_file``. With a token, every request needs it: an ``Authorization: Bearer``
header, or the cookie set when the page is opened as ``/?token=...``. Otherwise the answer is
401. The page and the API carry only counts, ids and masked data (``sources.ALERT_FIELDS``).
"""

from __future__ import annotations

import hmac
import json
import os
from typing import Any, Iterator, Optional

from flask import Flask, Response, abort, jsonify, redirect, request, send_from_directory

from beam_pipeline.console.sources import Sources

__all__ = ["COOKIE", "STATIC", "create_app", "missing_assets"]

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
COOKIE = "paystream_console"
# The chart library, from npm (scripts/console_assets.sh, run by `make deps`).
VENDOR_FILES = ("vendor/uPlot.iife.min.js", "vendor/uPlot.min.css")


def missing_assets() -> list[str]:
    return [f for f in VENDOR_FILES if not os.path.exists(os.path.join(STATIC, f))]


def create_app(sources: Sources, token: Optional[str] = None) -> Flask:
    app = Flask(__name__, static_folder=None)

    def allowed() -> bool:
        if token is None:
            return True
        given = request.cookies.get(COOKIE) or ""
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            given = header[len("Bearer ") :]
        return hmac.compare_digest(given.encode(), token.encode())

    @app.before_request
    def check_token() -> Any:
        if token is not None and request.path == "/" and "token" in request.args:
            if not hmac.compare_digest(request.args["token"].encode(), token.encode()):
                abort(401)
            response = redirect("/")
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
            return response
        if not allowed():
            return Response("a token is required\n", status=401, mimetype="text/plain")
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/")
    def index() -> Response:
        return send_from_directory(STATIC, "index.html")

    @app.get("/static/<path:name>")
    def static(name: str) -> Response:
        return send_from_directory(STATIC, name)

    @app.get("/api/snapshot")
    def snapshot() -> Response:
        return jsonify(sources.snapshot())

    @app.get("/api/alerts")
    def alerts() -> Response:
        def events() -> Iterator[str]:
            yield "retry: 1000\n\n"
            for alert in sources.alerts():
                if alert is None:
                    yield ": waiting\n\n"
                else:
                    yield f"data: {json.dumps(alert, separators=(',', ':'))}\n\n"

        return Response(events(), mimetype="text/event-stream", headers={"X-Accel-Buffering": "no"})

    return app
