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
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import apache_beam as beam

from schemas.observability import REDIS_KEY_PREFIX, RedisKeys
from schemas.records import FraudAlert
from schemas.rows import ALERTS, alert_row
from transforms import telemetry
from transforms.sinks import Sink, record_write
from transforms.sinks.redis_client import (
    DEFAULT_RETRY_BUDGET_S,
    FATAL_ERRORS,
    RETRYABLE_ERRORS,
    RedisTarget,
    backoff_delays,
    call_with_backoff,
)

__all__ = [
    "ALERT_SCRIPT",
    "DEFAULT_RETRY_BUDGET_S",
    "RedisAlertSink",
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

TABLE = "redis_alerts"
DEFAULT_ALERT_TTL_S = 7 * 24 * 3600
DEFAULT_STREAM_MAXLEN = 100_000
DEFAULT_BATCH_SIZE = 500

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


AlertKeys = RedisKeys  # the key layout under a prefix: schemas.observability.RedisKeys


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
    """Alerts buffered per bundle and sent in pipelined batches of ``batch_size`` (and at
    the bundle's end), each batch under ``call_with_backoff``; the client is made and
    checked with one ``PING`` at setup, so a wrong password or URL fails before any bundle."""

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
        self._client: Any = None

    def setup(self) -> None:
        self._client = self._target.connect()
        self._script = self._client.register_script(ALERT_SCRIPT)
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

    def _execute(self, batch: Sequence[Tuple[FraudAlert, int]]) -> List[Any]:
        pipe = self._client.pipeline(transaction=False)
        for alert, detected_at_us in batch:
            keys, args = script_call(self._keys, alert, detected_at_us, self._ttl_s, self._maxlen)
            self._script(keys=keys, args=args, client=pipe)
        return list(pipe.execute())

    def _flush(self) -> None:
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        started = time.monotonic()
        results = call_with_backoff(
            lambda: self._execute(batch),
            what=f"{TABLE} batch of {len(batch)} (first {batch[0][0].alert_id})",
            table=TABLE,
            budget_s=self._retry_budget_s,
        )
        record_write(TABLE, len(batch), started, [alert.crossing_txn_time_us for alert, _ in batch])
        new = sum(1 for r in results if r == 1)
        if new < len(batch):  # replayed after a restore, or a retried write that had landed
            telemetry.count("sink_rows_present", len(batch) - new, table=TABLE)
        _LOG.debug("redis alerts: %d written, %d already present", new, len(batch) - new)


class WriteAlertsToRedis(beam.PTransform):
    """``FraudAlert`` -> Redis (set, hash, stream, pub/sub), idempotent on ``alert_id``."""

    def __init__(
        self,
        target: RedisTarget,
        key_prefix: str = REDIS_KEY_PREFIX,
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


class RedisAlertSink(Sink):
    """The sink seam's face of ``WriteAlertsToRedis``: the graph's tables in, the alerts
    written; Redis refuses no alert: no dead letters (``PDone``)."""

    tables = (ALERTS,)

    def __init__(self, write: WriteAlertsToRedis, label: Optional[str] = None) -> None:
        super().__init__(label)
        self._write = write

    def expand(self, tables: Mapping[str, beam.PCollection[Any]]) -> Any:
        return tables[ALERTS] | "Write redis_alerts" >> self._write
