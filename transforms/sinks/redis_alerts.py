"""Fraud alerts to Redis, for the systems that act on them in real time.

For each ``FraudAlert``, one atomic Lua script (``ALERT_SCRIPT``) does:

* ``SADD {prefix}fraud:accounts <account_id>``: every account ever alerted (no TTL);
* ``HSET {prefix}alert:<alert_id>`` with the fields of ``schemas.rows.alert_row``
  (lists as JSON), ``EXPIRE`` ``--redis_alert_ttl_s`` (default 7 days);
* ``XADD {prefix}alerts:stream MAXLEN ~ --redis_stream_maxlen`` (default 100,000) with
  the same fields;
* ``PUBLISH {prefix}alerts <the row as JSON>``.

**Idempotent on ``alert_id``.** The hash, the stream entry and the message are
written only when ``SET {prefix}alert:<alert_id>:streamed 1 NX EX ttl`` sets the
guard, in the same script, so a replay (the pipeline re-reads its input after a
restart, or a bundle is retried) leaves the same state: one stream entry per
alert, the first ``detected_at`` kept, one message. A replay after the TTL has
expired writes the alert again, as new.

**Batches and failures.** Alerts are buffered per bundle and written in one
pipelined round trip (``EVALSHA`` per alert) at the end of the bundle, or when
``batch_size`` are waiting. Connection errors (refused, reset, timeout, a
server still loading its data, a replica during failover) are retried with
exponential backoff for up to ``retry_budget_s`` (60 s); then the bundle fails
and the runner retries it, so nothing is lost. Each retry counts in
``sink_errors{table="redis_alerts"}``. Authentication and other errors fail at
once.

**Secrets.** The password comes from ``--redis_password_file``, read in
``setup()`` on the worker; a URL that carries a password is refused, so no
secret enters the serialised graph. ``rediss://`` URLs use TLS. Logs carry
ids and counts only (alerts hold no PII).

The keys of one alert live in different hash slots: this writes to a single
Redis (or a primary with replicas, such as Memorystore's standard tier), not
to Redis Cluster.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, TypeVar
from urllib.parse import urlsplit

import apache_beam as beam

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

from schemas.records import FraudAlert
from schemas.rows import alert_row
from transforms import telemetry

__all__ = [
    "ALERT_SCRIPT",
    "AlertKeys",
    "FATAL_ERRORS",
    "RETRYABLE_ERRORS",
    "RedisTarget",
    "WriteAlertsToRedis",
    "alert_fields",
    "alert_message",
    "backoff_delays",
    "call_with_backoff",
    "script_call",
]

_LOG = logging.getLogger(__name__)
_T = TypeVar("_T")

TABLE = "redis_alerts"
DEFAULT_ALERT_TTL_S = 7 * 24 * 3600
DEFAULT_STREAM_MAXLEN = 100_000
DEFAULT_BATCH_SIZE = 500
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

ALERT_SCRIPT = """
-- KEYS: 1 accounts set, 2 alert hash, 3 streamed guard, 4 stream
-- ARGV: 1 account_id, 2 ttl seconds, 3 stream maxlen, 4 channel, 5 message, 6.. field, value
redis.call('SADD', KEYS[1], ARGV[1])
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[2]) then
  return 0
end
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', unpack(fields))
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""


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


@dataclass(frozen=True)
class AlertKeys:
    """The key layout under ``prefix``."""

    prefix: str = "paystream:"

    @property
    def accounts(self) -> str:
        return f"{self.prefix}fraud:accounts"

    @property
    def stream(self) -> str:
        return f"{self.prefix}alerts:stream"

    @property
    def channel(self) -> str:
        return f"{self.prefix}alerts"

    def alert(self, alert_id: str) -> str:
        return f"{self.prefix}alert:{alert_id}"

    def streamed(self, alert_id: str) -> str:
        return f"{self.prefix}alert:{alert_id}:streamed"


def alert_fields(alert: FraudAlert, detected_at_us: int) -> Dict[str, str]:
    """The hash and stream fields: ``alert_row`` with every value a string, lists as JSON."""
    out: Dict[str, str] = {}
    for name, value in alert_row(alert, detected_at_us).items():
        if isinstance(value, list):
            out[name] = json.dumps(value, separators=(",", ":"))
        else:
            out[name] = "" if value is None else str(value)
    return out


def alert_message(alert: FraudAlert, detected_at_us: int) -> str:
    """The PUBLISH payload: the alert's row as a JSON object."""
    return json.dumps(alert_row(alert, detected_at_us), sort_keys=True, separators=(",", ":"))


def script_call(
    keys: AlertKeys, alert: FraudAlert, detected_at_us: int, ttl_s: int, maxlen: int
) -> Tuple[List[str], List[Any]]:
    """KEYS and ARGV of ``ALERT_SCRIPT`` for one alert."""
    args: List[Any] = [
        alert.account_id,
        ttl_s,
        maxlen,
        keys.channel,
        alert_message(alert, detected_at_us),
    ]
    for name, value in alert_fields(alert, detected_at_us).items():
        args.extend((name, value))
    redis_keys = [
        keys.accounts,
        keys.alert(alert.alert_id),
        keys.streamed(alert.alert_id),
        keys.stream,
    ]
    return redis_keys, args


class _WriteAlertsFn(beam.DoFn):
    def __init__(
        self,
        target: RedisTarget,
        keys: AlertKeys,
        ttl_s: int,
        maxlen: int,
        batch_size: int,
        retry_budget_s: float,
    ) -> None:
        self._target = target
        self._keys = keys
        self._ttl_s = ttl_s
        self._maxlen = maxlen
        self._batch_size = batch_size
        self._retry_budget_s = retry_budget_s
        self._buffer: List[Tuple[FraudAlert, int]] = []
        self._client: Optional[redis.Redis] = None

    def setup(self) -> None:
        self._client = self._target.connect()
        self._script = self._client.register_script(ALERT_SCRIPT)
        # One cheap call: a wrong password or URL fails here, before any bundle.
        call_with_backoff(self._client.ping, what="setup PING", table=TABLE, budget_s=self._retry_budget_s)

    def start_bundle(self) -> None:
        self._buffer = []

    def process(self, alert: FraudAlert) -> None:
        self._buffer.append((alert, int(time.time() * 1_000_000)))
        if len(self._buffer) >= self._batch_size:
            self._flush()

    def finish_bundle(self) -> None:
        self._flush()

    def teardown(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _write(self, batch: Sequence[Tuple[FraudAlert, int]]) -> List[Any]:
        assert self._client is not None
        pipe = self._client.pipeline(transaction=False)
        for alert, detected_at_us in batch:
            keys, args = script_call(self._keys, alert, detected_at_us, self._ttl_s, self._maxlen)
            self._script(keys=keys, args=args, client=pipe)
        return pipe.execute()

    def _flush(self) -> None:
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        started = time.monotonic()
        results = call_with_backoff(
            lambda: self._write(batch),
            what=f"alerts batch of {len(batch)} (first {batch[0][0].alert_id})",
            table=TABLE,
            budget_s=self._retry_budget_s,
        )
        now_us = int(time.time() * 1_000_000)
        telemetry.observe("sink_write_seconds", time.monotonic() - started, table=TABLE)
        telemetry.count("sink_rows", len(batch), table=TABLE)
        for alert, _ in batch:
            telemetry.observe(
                "end_to_end_latency_seconds", (now_us - alert.crossing_txn_time_us) / 1e6, table=TABLE
            )
        new = sum(1 for r in results if r == 1)
        if new < len(batch):  # replayed after a restore, or a retried write that had landed
            telemetry.count("sink_rows_present", len(batch) - new, table=TABLE)
        _LOG.debug("redis alerts: %d written, %d already present", new, len(batch) - new)


class WriteAlertsToRedis(beam.PTransform):
    """``FraudAlert`` -> Redis (set, hash, stream, pub/sub), idempotent on ``alert_id``."""

    def __init__(
        self,
        target: RedisTarget,
        key_prefix: str = "paystream:",
        alert_ttl_s: int = DEFAULT_ALERT_TTL_S,
        stream_maxlen: int = DEFAULT_STREAM_MAXLEN,
        batch_size: int = DEFAULT_BATCH_SIZE,
        retry_budget_s: float = DEFAULT_RETRY_BUDGET_S,
        label: Optional[str] = None,
    ) -> None:
        super().__init__(label)
        if not isinstance(target, RedisTarget):
            raise ValueError("target must be a RedisTarget")
        if alert_ttl_s <= 0:
            raise ValueError("--redis_alert_ttl_s must be > 0")
        if stream_maxlen <= 0:
            raise ValueError("--redis_stream_maxlen must be > 0")
        if batch_size <= 0:
            raise ValueError("batch_size must be > 0")
        if retry_budget_s < 0:
            raise ValueError("retry_budget_s must be >= 0")
        self._fn = _WriteAlertsFn(
            target, AlertKeys(key_prefix), int(alert_ttl_s), int(stream_maxlen), batch_size, retry_budget_s
        )

    def expand(self, alerts: beam.PCollection[FraudAlert]) -> beam.pvalue.PDone:
        alerts | "WriteAlerts" >> beam.ParDo(self._fn)
        return beam.pvalue.PDone(alerts.pipeline)
