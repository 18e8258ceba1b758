"""Produce simulator payments to Kafka at a controlled, live-adjustable rate.

The producer is idempotent (``enable.idempotence=true``, ``acks=all``), keys
each record by account (one account's payments stay in order on one
partition) and sets the record timestamp to the payment's event time, so a
consumer using create-time watermarks sees event time. Payments come from
``simulator.generator`` with all its labelled injections; the ground truth
of what was sent is kept for scoring.

Two clocks:

* ``LiveProducer`` (what ``python -m simulator`` runs): each payment is made when it
  is sent and says it happened then (``simulator.live``), so a reader that keeps up
  sees live event time, and the ground truth has each payment's send and
  acknowledgement time.
* ``PaymentProducer``, the backfill: payments are generated in blocks (in a worker
  process, one block ahead) on one monotone event-time timeline planned to end at
  about the wall clock, and sent at the requested rate, minutes of event time in
  seconds. See ``PaymentProducer._records``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import multiprocessing
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from simulator.generator import GeneratorConfig, GroundTruth, generate
from simulator.live import LiveConfig, LiveStream
from simulator.pacing import Pacer

__all__ = ["LiveProducer", "ProducerStats", "PaymentProducer", "producer_config", "plan_blocks"]

BLOCK_EVENTS = 20_000
BLOCK_GAP = timedelta(seconds=180)  # > the generator's 150 s isolation around bursts


def producer_config(bootstrap_servers: str, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    config: Dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "batch.num.messages": 10_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 500_000,
        "message.timeout.ms": 60_000,
    }
    config.update(extra or {})
    return config


@dataclass
class ProducerStats:
    produced: int = 0  # acknowledged by the broker
    failed: int = 0
    sent: int = 0  # handed to the client
    errors: Dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def snapshot(self, target_rate: float) -> Dict[str, Any]:
        with self.lock:
            elapsed = max(time.monotonic() - self.started, 1e-9)
            return {
                "produced": self.produced,
                "failed": self.failed,
                "in_flight": self.sent - self.produced - self.failed,
                "current_rate": target_rate,
                "achieved_rate": round(self.produced / elapsed, 1),
                "elapsed_s": round(elapsed, 2),
                "errors": dict(self.errors),
            }


def _merge_truth(total: Optional[GroundTruth], part: GroundTruth, block: int) -> GroundTruth:
    bursts = [dataclasses.replace(b, burst_id=f"b{block}-{b.burst_id}") for b in part.bursts]
    if total is None:
        return dataclasses.replace(part, bursts=bursts)
    total.valid_transaction_ids |= part.valid_transaction_ids
    total.duplicates += part.duplicates
    for reason, n in part.malformed.items():
        total.malformed[reason] = total.malformed.get(reason, 0) + n
    total.bursts.extend(bursts)
    total.late += part.late
    for kind, values in part.pii.items():
        total.pii.setdefault(kind, set()).update(values)
    return total


# What goes to Kafka: value, key (the account), record timestamp in ms (the event time).
Outgoing = Tuple[bytes, Optional[bytes], Optional[int]]


def record_timestamp_ms(event_time_us: Optional[int], now_ms: int) -> Optional[int]:
    """The event time, unless there is none or it lies in the future.

    Brokers refuse record timestamps far ahead of their clock (Kafka 4:
    ``log.message.timestamp.after.max.ms``, one hour) and fail the whole
    batch with them; a payload that claims a future time (an injected
    malformed one) travels with the send time instead, and the pipeline
    dead-letters it on its own ``event_time``.
    """
    if event_time_us is None or event_time_us <= 0 or event_time_us // 1000 > now_ms:
        return None
    return event_time_us // 1000


def _generate_block(config: GeneratorConfig) -> Tuple[List[Outgoing], GroundTruth, int, int]:
    """One block, ready to send, with the first and last event time of its valid payments."""
    records, truth = generate(config)
    times = [r.event_time_us for r in records if r.kind != "malformed" and r.event_time_us is not None]
    now_ms = int(time.time() * 1000)
    outgoing = [
        (
            r.payload,
            r.account_id.encode() if r.account_id else None,
            record_timestamp_ms(r.event_time_us, now_ms),
        )
        for r in records
    ]
    return outgoing, truth, min(times), max(times)


def plan_blocks(config: GeneratorConfig, block_events: int = BLOCK_EVENTS) -> Iterator[GeneratorConfig]:
    """Configs of successive blocks: distinct seeds, accounts scaled to the block size."""
    block = 0
    while True:
        yield dataclasses.replace(
            config,
            num_events=block_events,
            seed=config.seed + block,
            accounts=max(config.accounts, block_events // 6),
            include_oversized=config.include_oversized and block == 0,
        )
        block += 1


class PaymentProducer:
    """Sends generated payments to ``topic``; ``run()`` blocks until done or stopped."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        rate: float,
        generator: GeneratorConfig,
        num_events: Optional[int] = None,
        duration_s: Optional[float] = None,
        kafka_config: Optional[Dict[str, Any]] = None,
    ) -> None:
        self._setup(bootstrap_servers, topic, rate, num_events, duration_s, kafka_config)
        self._generator = generator

    def _setup(
        self,
        bootstrap_servers: str,
        topic: str,
        rate: float,
        num_events: Optional[int],
        duration_s: Optional[float],
        kafka_config: Optional[Dict[str, Any]],
    ) -> None:
        if num_events is None and duration_s is None:
            raise ValueError("give num_events, duration_s, or both")
        if num_events is not None and num_events <= 0:
            raise ValueError("num_events must be > 0")
        if duration_s is not None and duration_s <= 0:
            raise ValueError("duration_s must be > 0")
        self.topic = topic
        self.pacer = Pacer(rate)
        self.stats = ProducerStats()
        self._truth: Optional[GroundTruth] = None
        self._num_events = num_events
        self._duration_s = duration_s
        self._stop = threading.Event()
        from confluent_kafka import Producer  # the [kafka] extra

        self._producer = Producer(producer_config(bootstrap_servers, kafka_config))

    @property
    def truth(self) -> Optional[GroundTruth]:
        """What was sent (for the block generator: every block generated so far, whole)."""
        return self._truth

    def stop(self) -> None:
        self._stop.set()

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        with self.stats.lock:
            if err is None:
                self.stats.produced += 1
            else:
                self.stats.failed += 1
                name = err.name() if hasattr(err, "name") else str(err)
                self.stats.errors[name] = self.stats.errors.get(name, 0) + 1

    def _records(self) -> Iterator[Outgoing]:
        """Blocks of payments, each generated in a worker process while the previous one is sent.

        (Generation is pure Python: in a thread it would hold the GIL and stall the sender.)

        Event time is one monotone timeline: each block starts ``BLOCK_GAP`` after the last
        payment of the one before (accounts repeat across blocks; the gap keeps their bursts
        apart). A block spans more event time than it takes to send, so the timeline is
        planned backwards from now for the expected number of payments (``num_events``, or
        rate x duration): the run ends at about the wall clock. Raising the rate past the
        plan makes the last blocks run ahead of the clock.
        """
        expected = self._num_events or int(self.pacer.rate * (self._duration_s or 0)) or BLOCK_EVENTS
        remaining = self._num_events
        configs = plan_blocks(self._generator)
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:

            def next_config() -> Optional[GeneratorConfig]:
                nonlocal remaining
                if remaining is not None and remaining <= 0:
                    return None
                config = next(configs)
                if remaining is not None:
                    config = dataclasses.replace(config, num_events=min(remaining, config.num_events))
                    remaining -= config.num_events
                return config

            first = next_config()
            assert first is not None
            _, _, t0, t1 = pool.submit(_generate_block, first).result()  # the span of one block
            blocks = -(-expected // first.num_events)
            now = datetime.now(UTC).replace(microsecond=0)
            start = now - blocks * (timedelta(microseconds=t1 - t0) + BLOCK_GAP) - timedelta(seconds=60)
            future: Optional[concurrent.futures.Future[Any]] = pool.submit(
                _generate_block, dataclasses.replace(first, start=start)
            )
            block = 0
            while future is not None and not self._stop.is_set():
                outgoing, truth, _, last_us = future.result()
                self._truth = _merge_truth(self._truth, truth, block)
                block += 1
                config = next_config()
                future = None
                if config is not None:  # made while this block is sent
                    begin = datetime.fromtimestamp(last_us / 1e6, UTC) + BLOCK_GAP
                    future = pool.submit(_generate_block, dataclasses.replace(config, start=begin))
                yield from outgoing

    def prepare(self) -> None:
        """Generate the first block before the clock starts."""
        self._iter = self._records()
        self._first: Optional[Outgoing] = next(self._iter, None)

    def run(
        self, progress: Optional[Callable[[Dict[str, Any]], None]] = None, max_records: Optional[int] = None
    ) -> Dict[str, Any]:
        """Send until done, stopped or past ``duration_s``; returns the report.

        ``max_records``: pause once this call has sent that many (flushed, so all are
        acknowledged or failed); the next ``run()`` goes on from the next payment.
        """
        if not hasattr(self, "_iter"):
            self.prepare()
        if not hasattr(self, "_pending_records"):
            self._pending_records = itertools.chain(
                [self._first] if self._first is not None else [], self._iter
            )
        records = self._pending_records
        if not hasattr(self, "_deadline"):  # the first call: the clock starts
            self._deadline = None if self._duration_s is None else time.monotonic() + self._duration_s
            self.stats.started = time.monotonic()
        deadline = self._deadline
        pending: List[Outgoing] = []
        last_report = time.monotonic()
        self.pacer.set_rate(self.pacer.rate)  # the rate is owed from now, not from construction
        exhausted = False
        paused = False
        sent_here = 0
        while not self._stop.is_set() and not exhausted:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if progress is not None and now - last_report >= 1.0:
                last_report = now
                progress(self.stats.snapshot(self.pacer.rate))
            allowed = self.pacer.allowance()
            if max_records is not None:
                if sent_here >= max_records:
                    paused = True
                    break
                allowed = min(allowed, max_records - sent_here)
            if allowed == 0:
                self._producer.poll(0)
                self.pacer.wait_tick()
                continue
            while len(pending) < allowed:
                nxt = next(records, None)
                if nxt is None:
                    exhausted = True
                    break
                pending.append(nxt)
            batch, pending = pending[:allowed], pending[allowed:]
            for rec in batch:
                self._send(rec)
            sent_here += len(batch)
            self.pacer.sent(len(batch))
            self._producer.poll(0)
        if not paused:
            self._stop.set()  # ends the generator thread
        self._producer.flush(60)
        report = self.stats.snapshot(self.pacer.rate)
        if progress is not None:
            progress(report)
        return report

    def _send(self, rec: Outgoing) -> None:
        self._produce(rec, self._on_delivery)

    def _produce(self, rec: Outgoing, on_delivery: Callable[[Any, Any], None]) -> None:
        payload, key, ts_ms = rec
        while True:
            try:
                kwargs: Dict[str, Any] = {"key": key, "on_delivery": on_delivery}
                if ts_ms is not None and ts_ms > 0:
                    kwargs["timestamp"] = ts_ms
                self._producer.produce(self.topic, payload, **kwargs)
                with self.stats.lock:
                    self.stats.sent += 1
                return
            except BufferError:  # the client's queue is full: let it drain
                self._producer.poll(0.05)


class LiveProducer(PaymentProducer):
    """Sends live payments (``simulator.live``): each is made when it is sent, with its
    event time and record timestamp set to that moment (its injections relative to it).

    ``truth`` is what has been sent so far, with each valid payment's send and Kafka
    acknowledgement time (the send time plus the client's measured delivery latency,
    so it does not depend on when the delivery report is polled).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        rate: float,
        live: Optional[LiveConfig] = None,
        num_events: Optional[int] = None,
        duration_s: Optional[float] = None,
        kafka_config: Optional[Dict[str, Any]] = None,
    ) -> None:
        # a short linger: a live payment should not wait 20 ms for company
        config = {"linger.ms": 2, **(kafka_config or {})}
        self._setup(bootstrap_servers, topic, rate, num_events, duration_s, config)
        self.stream = LiveStream(live)

    @property
    def truth(self) -> GroundTruth:
        return self.stream.truth()

    def prepare(self) -> None:
        self._iter = self._records()
        self._first = None  # nothing is made ahead of its sending

    def _records(self) -> Iterator[Any]:
        """(value, key, timestamp, id of a valid payment or None), each made when drawn:
        ``run()`` draws a tick's records just before it sends them."""
        stream = self.stream
        remaining = self._num_events
        while remaining is None or remaining > 0:
            now = time.time()
            rec = stream.take(int(now * 1_000_000))
            key = rec.account_id.encode() if rec.account_id else None
            ts_ms = record_timestamp_ms(rec.event_time_us, int(now * 1000))
            yield rec.payload, key, ts_ms, rec.transaction_id if rec.kind != "malformed" else None
            if remaining is not None:
                remaining -= 1

    def _send(self, rec: Any) -> None:
        payload, key, ts_ms, txn_id = rec
        if txn_id is None:
            self._produce((payload, key, ts_ms), self._on_delivery)
            return
        sent_us = int(time.time() * 1_000_000)
        self.stream.sent(txn_id, sent_us)

        def delivered(err: Any, msg: Any) -> None:
            self._on_delivery(err, msg)
            latency = msg.latency() if err is None else None
            if latency is not None:
                self.stream.acked(txn_id, sent_us + int(latency * 1_000_000))

        self._produce((payload, key, ts_ms), delivered)
