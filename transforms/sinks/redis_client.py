"""The Redis client of the sinks: where Redis is, and how a call is retried.

* ``RedisTarget``: a ``redis://`` or ``rediss://`` URL and a file holding the password
  (read on the worker: no secret enters the serialised graph).
* ``call_with_backoff``: a call retried on ``RETRYABLE_ERRORS`` with exponential backoff
  for up to ``DEFAULT_RETRY_BUDGET_S``, each failed try counted in ``sink_errors``; then
  the bundle fails and the runner retries it, so nothing is lost.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple, Type, TypeVar
from urllib.parse import urlsplit

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.exceptions import (
        AuthenticationError,
        AuthorizationError,
        ExternalAuthProviderError,
        NoScriptError,
        ReadOnlyError,
    )
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from redis.retry import Retry
except ImportError as err:  # pragma: no cover - depends on the installed extras
    raise ImportError("the Redis sink needs the redis client: pip install -e '.[redis]'") from err

from transforms import telemetry

__all__ = [
    "DEFAULT_RETRY_BUDGET_S",
    "FATAL_ERRORS",
    "RETRYABLE_ERRORS",
    "RedisTarget",
    "backoff_delays",
    "call_with_backoff",
]

_LOG = logging.getLogger(__name__)
_T = TypeVar("_T")

DEFAULT_RETRY_BUDGET_S = 60.0

# Transient: the server is restarting, loading, unreachable for a while, or a replica
# during a failover. Everything else (auth, wrong type, script errors) fails at once.
RETRYABLE_ERRORS: Tuple[Type[BaseException], ...] = (
    RedisConnectionError,  # includes BusyLoadingError (LOADING) and refused/reset sockets
    RedisTimeoutError,
    NoScriptError,  # the script cache is empty after a restart; reloaded on the next try
    ReadOnlyError,
)
# Subclasses of ConnectionError in redis-py that no wait will cure: fail at once.
FATAL_ERRORS: Tuple[Type[BaseException], ...] = (
    AuthenticationError,
    AuthorizationError,
    ExternalAuthProviderError,
)


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is: a ``redis://`` or ``rediss://`` URL, and a file holding the password.

    Only the URL and the file's path travel in the graph; ``connect()`` reads the file
    on the worker. Invalid values raise ``ValueError`` while the graph is built.
    """

    url: str
    password_file: Optional[str] = None
    socket_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"--redis_url must start with redis:// or rediss://, got {parts.scheme!r}")
        if not parts.hostname:
            raise ValueError("--redis_url needs a host, e.g. redis://127.0.0.1:6379/0")
        if parts.password:
            raise ValueError("--redis_url must not carry a password; use --redis_password_file")
        if self.socket_timeout_s <= 0:
            raise ValueError("socket_timeout_s must be > 0")

    def read_password(self) -> Optional[str]:
        if not self.password_file:
            return None
        with open(self.password_file, encoding="utf-8") as handle:
            password = handle.read().strip()
        if not password:
            raise ValueError(f"--redis_password_file {self.password_file} is empty")
        return password

    def connect(self) -> redis.Redis:
        """A client that does not retry by itself: ``call_with_backoff`` decides, and counts."""
        return redis.Redis.from_url(
            self.url,
            password=self.read_password(),
            socket_timeout=self.socket_timeout_s,
            socket_connect_timeout=self.socket_timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=30,
        )


def backoff_delays(
    budget_s: float, first_s: float = 0.05, factor: float = 2.0, cap_s: float = 5.0
) -> List[float]:
    """The sleeps between tries: ``first_s`` doubling up to ``cap_s``, summing to at most ``budget_s``."""
    delays: List[float] = []
    delay, total = first_s, 0.0
    while total + delay <= budget_s:
        delays.append(delay)
        total += delay
        delay = min(cap_s, delay * factor)
    return delays


def call_with_backoff(
    action: Callable[[], _T],
    *,
    what: str,
    table: str,
    budget_s: float = DEFAULT_RETRY_BUDGET_S,
    sleep: Callable[[float], None] = time.sleep,
) -> _T:
    """``action()``, retried on ``RETRYABLE_ERRORS`` with exponential backoff within ``budget_s``.

    Each failed try counts in ``sink_errors{table}``; when the budget is spent the last
    error propagates (the bundle fails and the runner retries it).
    """
    delays = backoff_delays(budget_s)
    for attempt in range(len(delays) + 1):
        try:
            return action()
        except RETRYABLE_ERRORS as err:
            telemetry.count("sink_errors", table=table)
            if isinstance(err, FATAL_ERRORS):
                _LOG.error("%s: Redis refused the credentials (%s)", what, type(err).__name__)
                raise
            if attempt == len(delays):
                _LOG.error("%s: Redis unavailable after %d tries, failing the bundle", what, attempt + 1)
                raise
            _LOG.warning(
                "%s: Redis error %s (try %d), retrying in %.2f s",
                what,
                type(err).__name__,
                attempt + 1,
                delays[attempt],
            )
            sleep(delays[attempt])
    raise AssertionError("unreachable")  # pragma: no cover
