"""Free TCP ports on 127.0.0.1, for the local services and runs of the tests and benches."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port() -> int:
    """A port no one listens on now (the OS's choice); another process may take it before
    the caller binds it, so a caller that can should retry on another."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
