"""Redis fixtures for the tests: one real ``redis-server`` for the session, a key prefix per test.

``redis_server`` is the session-scoped fixture: a ``paystream_dev.harness.services.RedisServer``
on a free port on 127.0.0.1, ready when it answers PING, no persistence (``--save ''
--appendonly no``), stopped at the end of the session; ``redis_prefix`` gives each test its
own key prefix and deletes its keys afterwards. Import both into a test module.
``redis-server`` comes from the Debian package of the same name; without it the tests fail
and say so.
"""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest

from paystream_dev.harness.services import RedisServer

__all__ = ["redis_prefix", "redis_server"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(str(tmp_path_factory.mktemp("redis"))) as server:
        yield server


@pytest.fixture
def redis_prefix(redis_server: RedisServer) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis_server.client()
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
