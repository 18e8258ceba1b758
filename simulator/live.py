"""Live payments: each one made when it is sent and stamped with the time it is sent.

``LiveStream.take(now_us)`` returns the record to send at ``now_us``. Its event time
is ``now_us``, except for the labelled injections, which are placed relative to now:

* **velocity bursts**: one in ``burst_every`` payments starts one (0: none), and so does
  each ``inject_burst()`` (the simulator's ``POST /inject/burst``). A fresh account pays
  3 to 6 times over ``burst_span_s`` of wall time (each member goes when it is due),
  and pays nothing else within ``BURST_ISOLATION_US`` either side. One burst in three
  is out of order: its second payment says it happened before its first.
* **out of order**: a share of ordinary payments say they happened up to 2 s before
  they are sent;
* **late**: a share say 5 to 30 s before;
* **duplicates**: byte-identical copies of a valid payload, 1 to 8 places later;
* **malformed**: every kind of ``MALFORMED_KINDS`` once, then kinds at random.

Accounts come from a pool in which an account pays again only once
``NORMAL_MIN_GAP_US`` (plus a margin) has passed since its last payment's event time;
when none is free a new one joins. So at any rate, as in the block generator, no
account has 3 payments within 60 s except its burst, and the ground truth
(``truth()``) says exactly which accounts must alert. It also records, for each
valid payment, when it was sent and when Kafka acknowledged it (``acked()``), and
for each burst its crossing payment: the third one sent, whose arrival reaches
the threshold.
"""

from __future__ import annotations

import heapq
import random
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Dict, List, Optional, Set, Tuple

from simulator.generator import (
    _COUNTRIES,
    _DOMESTIC_MERCHANT_RATE,
    _LATE_MAX_MS,
    _LATE_MIN_MS,
    _MS,
    BURST_ISOLATION_US,
    BURST_MAX_SIZE,
    BURST_MIN_SIZE,
    MALFORMED_KINDS,
    NORMAL_MIN_GAP_US,
    PII_FIELDS,
    Burst,
    GroundTruth,
    SimRecord,
    _Account,
    _amount_value,
    _currency,
    _draw_cents,
    _dumps,
    _event_offset,
    _format_time,
    _make_account,
    _make_merchants,
    _malformed_kinds,
    _malformed_record,
    _Merchant,
    _message,
    _txn_id,
)

__all__ = ["LiveConfig", "LiveStream"]

_S = 1_000_000
_MARGIN_US = 5 * _S  # on top of the minimum gaps: jitter and rounding never bring two closer
_JITTER_US = 2 * _S
_DUPLICATE_MAX_DISTANCE = 8


@dataclass(frozen=True)
class LiveConfig:
    """What the live stream injects; rates are shares of all records sent."""

    seed: int = 42
    duplicate_rate: float = 0.05
    malformed_rate: float = 0.01
    late_rate: float = 0.01
    out_of_order_rate: float = 0.05
    burst_every: int = 200
    burst_span_s: Tuple[float, float] = (1.0, 10.0)
    include_oversized: bool = False  # the broker refuses messages over its limit (1 MiB)
    merchants: int = 2_000

    def __post_init__(self) -> None:
        for name in ("duplicate_rate", "malformed_rate", "late_rate", "out_of_order_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.malformed_rate + self.late_rate + self.out_of_order_rate >= 1.0:
            raise ValueError("malformed_rate + late_rate + out_of_order_rate must be below 1")
        if self.burst_every < 0:
            raise ValueError(f"burst_every must be >= 0 (0: only injected bursts), got {self.burst_every}")
        lo, hi = self.burst_span_s
        if not 0.0 < lo <= hi <= 30.0:
            raise ValueError(f"burst_span_s must satisfy 0 < low <= high <= 30, got {self.burst_span_s}")


@dataclass
class _LiveBurst:
    burst_id: str
    account: _Account
    merchants: List[_Merchant]
    small: bool
    out_of_order: bool
    due_us: List[int]  # when each member is to be sent
    sent: List[Tuple[str, int]] = field(default_factory=list)  # (transaction id, event time) in sending order


class LiveStream:
    """The records of a live run, one ``take(now_us)`` at a time (not thread-safe)."""

    def __init__(self, config: Optional[LiveConfig] = None) -> None:
        self.config = config or LiveConfig()
        seed = self.config.seed
        self._rng = random.Random(f"paystream-live:{seed}")
        self._merchants = _make_merchants(
            random.Random(f"paystream-live:{seed}:merchants"), self.config.merchants
        )
        self._domestic: Dict[str, List[_Merchant]] = {c.code: [] for c in _COUNTRIES}
        for m in self._merchants:
            self._domestic[m.country].append(m)
        self._risky = [m for m in self._merchants if m.category.high_risk]
        self._cards: Set[str] = set()
        self._emails: Set[str] = set()
        self._phones: Set[str] = set()
        self._accounts = 0
        # (may pay again from, account), each queue in the order its accounts rest: ordinary
        # payments rest an account NORMAL_MIN_GAP_US, bursts BURST_ISOLATION_US (so neither
        # queue's head waits behind a longer rest)
        self._pool: Deque[Tuple[int, _Account]] = deque()
        self._rested: Deque[Tuple[int, _Account]] = deque()
        self._bursts: List[_LiveBurst] = []
        self._due: List[Tuple[int, int, int]] = []  # heap of (due, burst index, member)
        self._copies: Deque[Tuple[int, SimRecord]] = deque()  # (send at position, record)
        self._position = 0
        self._counter = 0
        self._kinds = list(_malformed_kinds(self.config.include_oversized))
        self._rng.shuffle(self._kinds)
        self._common_kinds = [k for k in self._kinds if k != "oversized"]
        self._malformed_sent = 0
        self._injected = 0  # bursts asked for by inject_burst (from other threads, under the lock)
        self._inject_lock = threading.Lock()
        self._injections_started = 0
        self.valid_ids: Set[str] = set()
        self.duplicates = 0
        self.malformed: Dict[str, int] = {}
        self.late = 0
        self.pii: Dict[str, Set[str]] = {f: set() for f in PII_FIELDS}
        self.sends: Dict[str, Tuple[int, int]] = {}

    # --- what goes next ---------------------------------------------------------------

    def take(self, now_us: int) -> SimRecord:
        """The next record to send, made now."""
        self._position += 1
        if self._copies and self._copies[0][0] <= self._position:
            self.duplicates += 1
            return self._copies.popleft()[1]
        if self._due and self._due[0][0] <= now_us:
            _, b, _member = heapq.heappop(self._due)
            return self._valid(self._burst_member(self._bursts[b], now_us))
        if self._injected > self._injections_started:
            self._injections_started += 1
            return self._valid(self._start_burst(now_us))
        rng = self._rng
        r = rng.random()
        cfg = self.config
        if r < cfg.malformed_rate:
            return self._malformed(now_us)
        if cfg.burst_every and rng.random() * cfg.burst_every < 1.0:
            return self._valid(self._start_burst(now_us))
        r -= cfg.malformed_rate
        if r < cfg.late_rate:
            event_us = now_us - rng.randint(_LATE_MIN_MS, _LATE_MAX_MS) * _MS
            return self._valid(self._ordinary(event_us, late=True))
        r -= cfg.late_rate
        if r < cfg.out_of_order_rate:
            return self._valid(self._ordinary(now_us - rng.randint(1, _JITTER_US)))
        return self._valid(self._ordinary(now_us))

    def inject_burst(self) -> int:
        """Ask for one more velocity burst, started by the next ``take`` that sends no copy
        or burst member; safe from other threads. Returns the bursts asked for so far."""
        with self._inject_lock:
            self._injected += 1
            return self._injected

    def sent(self, transaction_id: str, sent_us: int) -> None:
        """Record when a valid payment was handed to Kafka."""
        self.sends.setdefault(transaction_id, (sent_us, 0))

    def acked(self, transaction_id: str, acked_us: int) -> None:
        """Record when Kafka acknowledged a valid payment (its first copy)."""
        sent = self.sends.get(transaction_id)
        if sent is not None and sent[1] == 0:
            self.sends[transaction_id] = (sent[0], acked_us)

    # --- ground truth ------------------------------------------------------------------

    def truth(self) -> GroundTruth:
        """What has been sent so far. A burst counts once at least 3 of its payments are out."""
        bursts = []
        for b in self._bursts:
            if len(b.sent) < BURST_MIN_SIZE:
                continue
            by_time = sorted(b.sent, key=lambda s: s[1])
            bursts.append(
                Burst(
                    burst_id=b.burst_id,
                    account_id=b.account.account_id,
                    first_time_us=by_time[0][1],
                    last_time_us=by_time[-1][1],
                    transaction_ids=tuple(t for t, _ in by_time),
                    crossing_transaction_id=b.sent[BURST_MIN_SIZE - 1][0],
                )
            )
        return GroundTruth(
            valid_transaction_ids=set(self.valid_ids),
            duplicates=self.duplicates,
            malformed=dict(sorted(self.malformed.items())),
            bursts=bursts,
            late=self.late,
            pii={k: set(v) for k, v in self.pii.items()},
            sends=dict(self.sends),
        )

    def bursts_pending(self) -> int:
        """Bursts with members still to send (a run that stops now leaves them unfinished)."""
        return len({b for _, b, _ in self._due})

    # --- the parts ---------------------------------------------------------------------

    def _new_account(self) -> _Account:
        self._accounts += 1
        account = _make_account(
            self._rng, f"acct-L{self._accounts:07d}", self._cards, self._emails, self._phones
        )
        for f in PII_FIELDS:
            self.pii[f].add(getattr(account, f))
        return account

    def _free_account(self, event_us: int) -> _Account:
        """An account whose last payment is far enough before ``event_us``, or a new one."""
        if self._pool and self._pool[0][0] <= event_us:
            return self._pool.popleft()[1]
        if self._rested and self._rested[0][0] <= event_us:
            return self._rested.popleft()[1]
        return self._new_account()

    def _ordinary(self, event_us: int, late: bool = False) -> SimRecord:
        rng = self._rng
        account = self._free_account(event_us)
        self._pool.append((event_us + NORMAL_MIN_GAP_US + _MARGIN_US, account))
        domestic = self._domestic[account.home_country]
        if rng.random() < _DOMESTIC_MERCHANT_RATE and domestic:
            merchant = rng.choice(domestic)
        else:
            merchant = rng.choice(self._merchants)
        cents = _draw_cents(rng, merchant.category.median_cents)
        if late:
            self.late += 1
        return self._record(account, merchant, cents, event_us, None, late)

    def _start_burst(self, now_us: int) -> SimRecord:
        rng = self._rng
        size = rng.randint(BURST_MIN_SIZE, BURST_MAX_SIZE)
        lo, hi = self.config.burst_span_s
        span_us = int(rng.uniform(lo, hi) * _S)
        offsets = [0, *sorted(rng.randint(1, span_us - 1) for _ in range(size - 2)), span_us]
        risky = self._risky
        burst = _LiveBurst(
            burst_id=f"live-{len(self._bursts) + 1:06d}",
            account=self._new_account(),
            merchants=[rng.choice(risky)] if rng.random() < 0.6 else rng.sample(risky, min(3, len(risky))),
            small=rng.random() < 0.5,
            out_of_order=len(self._bursts) % 3 == 2,
            due_us=[now_us + o for o in offsets],
        )
        self._bursts.append(burst)
        b = len(self._bursts) - 1
        for member, due in enumerate(burst.due_us[1:], start=1):
            heapq.heappush(self._due, (due, b, member))
        return self._burst_member(burst, now_us)

    def _burst_member(self, burst: _LiveBurst, now_us: int) -> SimRecord:
        rng = self._rng
        event_us = now_us
        if burst.out_of_order and len(burst.sent) == 1:  # says it came before the first
            event_us = burst.sent[0][1] - rng.randint(100_000, 1_000_000)
        merchant = rng.choice(burst.merchants)
        cents = rng.randint(50, 500) if burst.small else rng.randint(15_000, 90_000)
        record = self._record(burst.account, merchant, cents, event_us, burst.burst_id, False)
        assert record.transaction_id is not None
        burst.sent.append((record.transaction_id, event_us))
        if len(burst.sent) == len(burst.due_us):  # the last member: the account rests
            last = max(t for _, t in burst.sent)
            self._rested.append((last + BURST_ISOLATION_US + _MARGIN_US, burst.account))
        return record

    def _record(
        self,
        account: _Account,
        merchant: _Merchant,
        cents: int,
        event_us: int,
        burst_id: Optional[str],
        late: bool,
    ) -> SimRecord:
        rng = self._rng
        txn_id = _txn_id(self.config.seed, "live", self._counter)
        self._counter += 1
        obj = _message(
            txn_id,
            account,
            _amount_value(rng, cents),
            _currency(rng, merchant.country),
            merchant,
            _format_time(event_us, _event_offset(rng, merchant.country)),
        )
        return SimRecord(_dumps(obj), "valid", txn_id, None, burst_id, late, event_us, account.account_id)

    def _valid(self, record: SimRecord) -> SimRecord:
        assert record.transaction_id is not None
        self.valid_ids.add(record.transaction_id)
        if self._rng.random() < self.config.duplicate_rate:
            at = self._position + self._rng.randint(1, _DUPLICATE_MAX_DISTANCE)
            copy = SimRecord(
                record.payload,
                "duplicate",
                record.transaction_id,
                None,
                record.burst_id,
                record.late,
                record.event_time_us,
                record.account_id,
            )
            # positions only grow, so the queue stays sorted by where each copy goes
            index = len(self._copies)
            while index and self._copies[index - 1][0] > at:
                index -= 1
            self._copies.insert(index, (at, copy))
        return record

    def _malformed(self, now_us: int) -> SimRecord:
        rng = self._rng
        j = self._malformed_sent
        self._malformed_sent += 1
        kind = self._kinds[j] if j < len(self._kinds) else rng.choice(self._common_kinds)
        txn_id = _txn_id(self.config.seed, "live-malformed", j)
        account = self._pool[-1][1] if self._pool else self._new_account()  # not a payment: no gap needed
        merchant = rng.choice(self._merchants)
        record, obj = _malformed_record(rng, kind, txn_id, account, merchant, now_us, now_us)
        for f in PII_FIELDS:
            if f in obj:
                self.pii[f].add(obj[f])
        reason = MALFORMED_KINDS[kind]
        self.malformed[reason] = self.malformed.get(reason, 0) + 1
        return record
