"""``python -m beam_pipeline.console``: a live console of a run, in the browser.

    python -m beam_pipeline.console --metrics_url http://127.0.0.1:9102/metrics \\
        --redis_url redis://127.0.0.1:6379 --bootstrap_servers 127.0.0.1:9092

It shows payments in, stored and dead-lettered per second, the consumer lag, the alert
latency, fraud alerts as they arrive, the top accounts, dead letters by reason and each
part's health (``beam_pipeline.console.sources``). It binds 127.0.0.1; ``--host`` elsewhere
needs ``--token_file``.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import List, Optional

from schemas.observability import CONSUMER_GROUP, REDIS_KEY_PREFIX

__all__ = ["main", "serve"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m beam_pipeline.console", description=__doc__.split("\n\n")[2])
    p.add_argument("--metrics_url", default="http://127.0.0.1:9102/metrics", help="the run's /metrics")
    p.add_argument("--redis_url", default="redis://127.0.0.1:6379", help="the Redis of the alerts")
    p.add_argument("--redis_key_prefix", default=REDIS_KEY_PREFIX)
    p.add_argument("--bootstrap_servers", default=None, help="Kafka, for the consumer lag (HOST:PORT)")
    p.add_argument("--kafka_consumer_group", default=CONSUMER_GROUP)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8050, help="port (default 8050; 0: a free one)")
    p.add_argument("--token_file", default=None, help="a file holding the token every request must carry")
    return p


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(args: argparse.Namespace, ready: Optional[object] = None) -> int:
    import logging

    from werkzeug.serving import make_server

    from beam_pipeline.console.app import create_app, missing_assets
    from beam_pipeline.console.sources import Sources

    token = None
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as handle:
            token = handle.read().strip()
        if not token:
            print(f"console: {args.token_file} is empty", file=sys.stderr)
            return 2
    if token is None and not _loopback(args.host):
        print(f"console: bound to {args.host}, it needs --token_file", file=sys.stderr)
        return 2
    missing = missing_assets()
    if missing:
        print(f"console: assets missing ({', '.join(missing)}): run `make deps`", file=sys.stderr)
        return 2
    sources = Sources(
        args.metrics_url,
        args.redis_url,
        args.bootstrap_servers,
        args.kafka_consumer_group,
        args.redis_key_prefix,
    ).start()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = make_server(args.host, args.port, create_app(sources, token), threaded=True)
    host, port = server.server_address[:2]
    print(f"console: http://{host!s}:{port}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sources.stop()
        server.server_close()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    import faulthandler

    faulthandler.enable()  # a crash in a native library leaves its stack in the log
    return serve(_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
