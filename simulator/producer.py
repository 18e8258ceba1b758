"""Produce simulator payments to Kafka at a controlled, live-adjustable rate.

The producer is idempotent (``enable.idempotence=true``, ``acks=all``), keys
each record by account (one account's payments stay in order on one
partition) and sets the record timestamp to the payment's event time, so a
consumer using create-time watermarks sees event time. Payments come from
``simulator.generator`` with all its labelled injections; the ground truth
of what was sent is kept for scoring.

The simulated clock: a block of payments is generated ahead, with event times
ending at "now", and sent at the requested rate. Event time therefore
advances faster than the wall clock when the rate outruns the simulated
accounts' pace; it never runs ahead of the wall clock by more than one
block's span (a few minutes), which the pipeline's future-time check allows.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Callable, Dict, Iterator, List, Optional

from simulator.generator import GeneratorConfig, GroundTruth, SimRecord, generate
from simulator.pacing import Pacer

__all__ = ["ProducerStats", "PaymentProducer", "producer_config", "plan_blocks"]

BLOCK_EVENTS = 50_000


def producer_config(bootstrap_servers: str, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    config: Dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
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


def _ending_now(config: GeneratorConfig) -> GeneratorConfig:
    """The same payments, shifted so the last event time is about now."""
    probe, _ = generate(config)
    times = [r.event_time_us for r in probe if r.kind != "malformed" and r.event_time_us is not None]
    span = timedelta(microseconds=(max(times) - min(times)) if times else 0)
    now = datetime.now(UTC).replace(microsecond=0)
    return dataclasses.replace(config, start=now - span - timedelta(seconds=5))


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
        if num_events is None and duration_s is None:
            raise ValueError("give num_events, duration_s, or both")
        if num_events is not None and num_events <= 0:
            raise ValueError("num_events must be > 0")
        if duration_s is not None and duration_s <= 0:
            raise ValueError("duration_s must be > 0")
        self.topic = topic
        self.pacer = Pacer(rate)
        self.stats = ProducerStats()
        self.truth: Optional[GroundTruth] = None
        self._generator = generator
        self._num_events = num_events
        self._duration_s = duration_s
        self._stop = threading.Event()
        from confluent_kafka import Producer  # the [kafka] extra

        self._producer = Producer(producer_config(bootstrap_servers, kafka_config))

    def stop(self) -> None:
        self._stop.set()

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        with self.stats.lock:
            if err is None:
                self.stats.produced += 1
            else:
                self.stats.failed += 1

    def _records(self) -> Iterator[SimRecord]:
        remaining = self._num_events
        for block, config in enumerate(plan_blocks(self._generator)):
            if remaining is not None:
                config = dataclasses.replace(config, num_events=min(remaining, config.num_events))
            records, truth = generate(_ending_now(config))
            self.truth = _merge_truth(self.truth, truth, block)
            yield from records
            if remaining is not None:
                remaining -= len(records)
                if remaining <= 0:
                    return

    def run(self, progress: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
        deadline = None if self._duration_s is None else time.monotonic() + self._duration_s
        records = self._records()
        pending: List[SimRecord] = []
        last_report = time.monotonic()
        self.stats.started = time.monotonic()
        exhausted = False
        while not self._stop.is_set() and not exhausted:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if progress is not None and now - last_report >= 1.0:
                last_report = now
                progress(self.stats.snapshot(self.pacer.rate))
            allowed = self.pacer.allowance()
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
            self.pacer.sent(len(batch))
            self._producer.poll(0)
        self._producer.flush(60)
        report = self.stats.snapshot(self.pacer.rate)
        if progress is not None:
            progress(report)
        return report

    def _send(self, rec: SimRecord) -> None:
        key = rec.account_id.encode() if rec.account_id else None
        ts_ms = rec.event_time_us // 1000 if rec.event_time_us is not None else None
        while True:
            try:
                kwargs: Dict[str, Any] = {"key": key, "on_delivery": self._on_delivery}
                if ts_ms is not None and ts_ms > 0:
                    kwargs["timestamp"] = ts_ms
                self._producer.produce(self.topic, rec.payload, **kwargs)
                with self.stats.lock:
                    self.stats.sent += 1
                return
            except BufferError:  # the client's queue is full: let it drain
                self._producer.poll(0.05)
