"""Velocity fraud: ``threshold`` or more payments of one account in a sliding window.

The graph counts payments per account in ``SlidingWindows(size, period)``
with early firings (a pane per payment, so a window reports the moment it
reaches the threshold, not when it closes) and ``allowed_lateness``.

Each payment lands in ``size / period`` overlapping windows, so one burst
makes many windows cross the threshold. ``RaiseAlerts`` turns them into one
alert per burst. The rule, in plain code (``BurstTracker``, tested without a
pipeline): windows of one account that hold ``threshold`` payments and whose
starts are consecutive (``period`` apart) form a *run*; a run is one burst
and raises one alert; a run that touches an already-alerted run (late data
can extend one) raises nothing new. The alert id is derived from the
account and the start of the run's first window. A run is judged once the
watermark passes the event time of the payment that crossed the threshold:
by then every window to its left is complete (each such window ends before
that time, or would itself hold the crossing payments), so the run's start,
and hence the id, no longer depends on arrival order. Replays give the same
ids; the sinks write idempotently on them.

Two implementations give the same alerts (``tests/test_velocity.py`` runs
every scenario on both):

* ``windows``: Beam's ``SlidingWindows`` with an early/late ``AfterCount(1)``
  trigger and ``CombinePerKey``, then ``RaiseAlerts``. Windowing and grouping
  run in the runner, which is where Flink and Dataflow are fast.
* ``state``: one stateful step per account that assigns each payment to the
  same sliding windows by hand (``window_starts`` is checked against
  ``SlidingWindows.assign``) and judges runs as above. No per-window fan-out
  through the runner: on the DirectRunner, where windowed grouping with
  triggers costs milliseconds per payment, this is two orders of magnitude
  faster. Late payments are refused by windows whose end plus the allowed
  lateness the account's timers have already passed.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Iterable, List, NamedTuple, Optional, Tuple

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.transforms import trigger as triggers
from apache_beam.transforms import window as windows
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from schemas.records import FraudAlert, MaskedTransaction
from transforms import telemetry
from transforms.batching import DEFAULT_SHARDS, GroupIntoShards
from transforms.rules import alert_id, rule_params_json

__all__ = [
    "BurstTracker",
    "JudgeBurstShards",
    "VelocityFraud",
    "VelocityRule",
    "WindowCount",
    "judge_bursts",
    "judge_shard",
    "window_starts",
]

_US = 1_000_000
# (event_time_us, transaction_id): enough to name the payments that crossed.
TxnRef = Tuple[int, str]


@dataclass(frozen=True)
class VelocityRule:
    """``threshold`` payments of one account inside a ``size_s`` window sliding by ``period_s``."""

    threshold: int = 3
    size_s: int = 60
    period_s: int = 5
    allowed_lateness_s: int = 10

    def __post_init__(self) -> None:
        if self.threshold < 2:
            raise ValueError("threshold must be >= 2")
        if self.size_s <= 0 or self.period_s <= 0:
            raise ValueError("window size and period must be > 0")
        if self.size_s % self.period_s:
            raise ValueError("window size must be a multiple of the period")
        if self.allowed_lateness_s < 0:
            raise ValueError("allowed lateness must be >= 0")

    @property
    def name(self) -> str:
        return f"velocity:{self.threshold} in {self.size_s}s/{self.period_s}s"

    @property
    def size_us(self) -> int:
        return self.size_s * _US

    @property
    def period_us(self) -> int:
        return self.period_s * _US

    # ------------------------------------------------------------ the rule seam (transforms/rules.py)

    kind: ClassVar[str] = "velocity"

    @classmethod
    def from_options(cls, opts: Any) -> VelocityRule:
        """Its flags (``--velocity_*``, ``--allowed_lateness_s``) are the pipeline's own
        (``beam_pipeline/options.py``): the Kafka replay and the windows path use them too."""
        return cls(
            opts.velocity_threshold, opts.velocity_window_s, opts.velocity_period_s, opts.allowed_lateness_s
        )

    def params(self) -> Dict[str, Any]:
        return {
            "threshold": self.threshold,
            "window_s": self.size_s,
            "period_s": self.period_s,
            "allowed_lateness_s": self.allowed_lateness_s,
        }

    def new_state(self) -> List[Any]:
        """[held, runs]: the payments an open window can hold, sorted, as
        (event_time_us, transaction_id, closed_before_us), the last being the latest window
        start already closed when it arrived; and [first start, last start, alert id] of
        the alerted runs."""
        return [[], []]

    def keep_us(self) -> int:
        return (self.allowed_lateness_s + 2 * self.size_s) * _US

    def observe(self, state: List[Any], txn: MaskedTransaction, clock: int) -> Optional[FraudAlert]:
        """The payment counted into the windows ``SlidingWindows(size, period)`` assigns it
        (``window_starts``). The windows that now hold ``threshold`` payments or more form
        its *run*. A run that touches (within one period) a run already alerted extends it
        and raises nothing; otherwise it raises one alert, at once, on this payment. A
        window is closed once its end plus the allowed lateness is behind ``clock``: a
        payment is not counted in closed windows."""
        at = txn.event_time_us
        held = state[0]
        if at > clock and len(held) > 16:
            self.prune(state, at)
        size_us, period_us, threshold = self.size_s * _US, self.period_s * _US, self.threshold
        closed_before = clock - self.allowed_lateness_s * _US - size_us
        last_start = at - at % period_us  # its windows start at last_start, - period, ...
        if last_start <= closed_before:
            return None  # every window that holds it is closed
        entry = (at, txn.transaction_id, closed_before)
        if not held or entry > held[-1]:
            held.append(entry)
            if len(held) < threshold or held[-threshold][0] <= at - size_us:
                return None  # in order, and too few payments within a window's length before it
        else:
            insort(held, entry)
        lo = bisect_left(held, (at - size_us + 1,))
        hi = bisect_left(held, (last_start + size_us,), lo)
        if hi - lo < threshold:
            return None
        firing: List[Tuple[int, List[Any]]] = []
        for start in range(last_start, max(closed_before, at - size_us), -period_us):
            begin = bisect_left(held, (start,), lo, hi)
            inside = [
                p for p in held[begin : bisect_left(held, (start + size_us,), begin, hi)] if p[2] < start
            ]
            if len(inside) >= threshold:
                firing.append((start, inside))
        if not firing:
            return None
        first, last = firing[-1][0], firing[0][0]
        for run in state[1]:
            if first <= run[1] + period_us and last >= run[0] - period_us:
                run[0], run[1] = min(run[0], first), max(run[1], last)
                return None  # part of a burst already alerted
        alert = alert_id(txn.account_id, self.name, first)
        state[1].append([first, last, alert])
        earliest = firing[-1][1][:threshold]
        return FraudAlert(
            alert_id=alert,
            account_id=txn.account_id,
            rule=self.name,
            threshold=threshold,
            window_start_us=first,
            window_end_us=first + size_us,
            first_txn_time_us=min(inside[0][0] for _, inside in firing),
            crossing_txn_time_us=at,
            matched_count=max(len(inside) for _, inside in firing),
            transaction_ids=tuple(p[1] for p in earliest),
            rule_params=rule_params_json(self.params()),
        )

    def prune(self, state: List[Any], clock: int) -> None:
        """Forget what can no longer change a decision (never changes one): an open window
        starts after clock - lateness - size, so older payments are in none, and a run
        ending a period before that can no longer be touched."""
        open_after = clock - self.allowed_lateness_s * _US - self.size_s * _US
        held = state[0]
        del held[: bisect_left(held, (open_after - self.size_s * _US,))]
        state[1] = [r for r in state[1] if r[1] + self.period_s * _US >= open_after - self.period_s * _US]


def window_starts(event_time_us: int, size_us: int, period_us: int) -> List[int]:
    """Starts of the sliding windows that contain ``event_time_us`` (as Beam assigns them)."""
    last = event_time_us - (event_time_us % period_us)
    return [s for s in range(last, event_time_us - size_us, -period_us)]


class WindowCount(NamedTuple):
    """One pane of one sliding window of one account."""

    start_us: int
    end_us: int
    payments: int
    earliest: Tuple[TxnRef, ...]  # the ``threshold`` earliest payments in the window


@dataclass
class _Alerted:
    first_start_us: int
    last_start_us: int
    alert_id: str


# A payment as the tracker keeps it: (event_time_us, transaction_id, closed_before_us),
# the last the latest window start that was already closed when it arrived.
_Held = Tuple[int, str, int]


@dataclass
class BurstTracker:
    """Per-account state of ``RaiseAlerts``: window counts and alerted runs.

    The ``windows`` implementation hands it every pane (``observe``). The ``state``
    implementation hands it payments (``add_payment``): it keeps the account's
    payments in order and builds the pane of a window only when the window can
    hold ``threshold`` of them, so a payment with no close neighbours costs one
    append and two bisections, not a pane for each of its windows.
    """

    windows: Dict[int, WindowCount] = field(default_factory=dict)
    alerted: List[_Alerted] = field(default_factory=list)
    max_end_us: int = 0
    watermark_us: int = -(2**62)  # the latest timer time seen: a lower bound of the watermark
    payments: List[_Held] = field(default_factory=list)  # sorted; only what a changing window can hold

    def add_payment(self, ref: TxnRef, rule: VelocityRule) -> List[WindowCount]:
        """Count a payment into its sliding windows, as ``SlidingWindows`` assigns them.

        Windows already past the allowed lateness (as far as this key has seen
        the watermark) don't take it, like Beam's windowing. Returns the panes
        that changed and hold at least ``threshold`` payments (no other pane can
        raise or shape an alert).
        """
        at = ref[0]
        size_us, period_us, threshold = rule.size_s * _US, rule.period_s * _US, rule.threshold
        closed_before = self.watermark_us - rule.allowed_lateness_s * _US - size_us
        last_start = at - at % period_us  # the windows holding it start at last_start, - period, ...
        if last_start <= closed_before:  # end + allowed lateness <= watermark: all closed
            return []
        held = (at, ref[1], closed_before)
        payments = self.payments
        if last_start + size_us > self.max_end_us:
            self.max_end_us = last_start + size_us
        if not payments or held > payments[-1]:
            payments.append(held)
            if len(payments) < threshold or payments[-threshold][0] <= at - size_us:
                return []  # in order, and too few payments within a window's length before it
        else:
            insort(payments, held)
        # Every window holding this payment lies within (at - size, last_start + size).
        lo = bisect_left(payments, (at - size_us + 1,))
        hi = bisect_left(payments, (last_start + size_us,), lo)
        if hi - lo < threshold:
            return []
        new = tuple.__new__  # WindowCount(...) without its keyword handling
        changed = []
        for start in range(last_start, max(closed_before, at - size_us), -period_us):
            end = start + size_us
            first = bisect_left(payments, (start,), lo, hi)
            inside = [p for p in payments[first : bisect_left(payments, (end,), first, hi)] if p[2] < start]
            if len(inside) >= threshold:
                earliest = tuple((p[0], p[1]) for p in inside[:threshold])
                pane = new(WindowCount, (start, end, len(inside), earliest))
                self.windows[start] = pane
                changed.append(pane)
        return changed

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "payments" not in state:
            # Pickled before the tracker kept its payments (a checkpoint of an older
            # version): the payments its panes name stand in for them, so the windows it
            # had keep their start and crossing; counts past ``threshold`` are not known.
            held = {(at, txn_id, -(2**62)) for pane in self.windows.values() for at, txn_id in pane.earliest}
            self.payments = sorted(held)

    def observe(self, pane: WindowCount) -> None:
        """Record a pane; with accumulating panes the largest count is the latest."""
        self.max_end_us = max(self.max_end_us, pane.end_us)
        known = self.windows.get(pane.start_us)
        if known is None or pane.payments >= known.payments:
            self.windows[pane.start_us] = pane

    def crossing_time_us(self, pane: WindowCount, rule: VelocityRule) -> Optional[int]:
        if pane.payments < rule.threshold or len(pane.earliest) < rule.threshold:
            return None
        return pane.earliest[rule.threshold - 1][0]

    def _runs(self, rule: VelocityRule) -> List[List[WindowCount]]:
        firing = sorted(
            (w for w in self.windows.values() if w.payments >= rule.threshold), key=lambda w: w.start_us
        )
        runs: List[List[WindowCount]] = []
        for pane in firing:
            if runs and pane.start_us - runs[-1][-1].start_us == rule.period_us:
                runs[-1].append(pane)
            else:
                runs.append([pane])
        return runs

    def evaluate(
        self, account_id: str, rule: VelocityRule, watermark_us: int
    ) -> Tuple[List[FraudAlert], Optional[int]]:
        """Alerts for runs whose crossing is at or before ``watermark_us``.

        Returns the new alerts and the crossing time of the next run still
        waiting for the watermark (``None`` if none).
        """
        alerts: List[FraudAlert] = []
        next_due: Optional[int] = None
        for run in self._runs(rule):
            crossings = [(self.crossing_time_us(w, rule) or 0, w.start_us, w) for w in run]
            cross_us, _, crossing_pane = min(crossings, key=lambda c: (c[0], c[1]))
            first, last = run[0].start_us, run[-1].start_us
            touched = [
                a
                for a in self.alerted
                if first <= a.last_start_us + rule.period_us and last >= a.first_start_us - rule.period_us
            ]
            if touched:
                for a in touched:
                    a.first_start_us = min(a.first_start_us, first)
                    a.last_start_us = max(a.last_start_us, last)
                continue
            if cross_us > watermark_us:
                next_due = cross_us if next_due is None else min(next_due, cross_us)
                continue
            burst_id = alert_id(account_id, rule.name, first)
            self.alerted.append(_Alerted(first, last, burst_id))
            earliest = crossing_pane.earliest[: rule.threshold]
            alerts.append(
                FraudAlert(
                    alert_id=burst_id,
                    account_id=account_id,
                    rule=rule.name,
                    threshold=rule.threshold,
                    window_start_us=run[0].start_us,
                    window_end_us=run[0].end_us,
                    first_txn_time_us=min(w.earliest[0][0] for w in run),
                    crossing_txn_time_us=cross_us,
                    matched_count=max(w.payments for w in run),
                    transaction_ids=tuple(ref[1] for ref in earliest),
                    rule_params=rule_params_json(rule.params()),
                )
            )
        return alerts, next_due

    def prune(self, rule: VelocityRule, watermark_us: int) -> None:
        """Forget windows that can no longer change nor touch a changing one."""
        horizon = watermark_us - rule.allowed_lateness_s * _US - 2 * rule.size_us
        self.windows = {s: w for s, w in self.windows.items() if w.end_us > horizon}
        self.alerted = [a for a in self.alerted if a.last_start_us + rule.size_us > horizon]
        # A window that can still change starts after ``horizon - size``: older payments are in none.
        del self.payments[: bisect_left(self.payments, (horizon - rule.size_us + 1,))]

    def idle_after_us(self, rule: VelocityRule) -> int:
        """After this event time no window of the account can change any more."""
        return self.max_end_us + rule.allowed_lateness_s * _US + 2 * rule.size_us


def judge_bursts(
    payments: Iterable[Tuple[str, TxnRef]], rule: VelocityRule, judge_until_us: Optional[int] = None
) -> List[FraudAlert]:
    """The alerts of a complete input: every account's payments counted, then judged once.

    What the stateful paths give when the watermark passes everything (a batch
    run): runs are judged up to ``judge_until_us`` (``None``: all of them).
    """
    trackers: Dict[str, BurstTracker] = {}
    for account, ref in payments:
        tracker = trackers.get(account)
        if tracker is None:
            tracker = trackers[account] = BurstTracker()
        tracker.add_payment(ref, rule)
    judge = 2**62 if judge_until_us is None else judge_until_us
    alerts: List[FraudAlert] = []
    for account in sorted(trackers):
        alerts.extend(trackers[account].evaluate(account, rule, judge)[0])
    return alerts


def judge_shard(
    records: Iterable[MaskedTransaction], rule: VelocityRule, judge_until_us: Optional[int]
) -> Iterable[TimestampedValue]:
    """``judge_bursts`` over a shard's complete list of accounts: each alert, counted and
    stamped with its crossing payment's event time."""
    refs = ((t.account_id, (t.event_time_us, t.transaction_id)) for t in records)
    for alert in judge_bursts(refs, rule, judge_until_us):
        telemetry.count("fraud_alerts", rule="velocity")
        yield TimestampedValue(alert, Timestamp(micros=alert.crossing_txn_time_us))


class _JudgeShardFn(beam.DoFn):
    def __init__(self, rule: VelocityRule, judge_until_us: Optional[int]) -> None:
        self._rule = rule
        self._judge_until_us = judge_until_us

    def process(self, shard: Tuple[int, List[MaskedTransaction]]) -> Iterable[TimestampedValue]:
        return judge_shard(shard[1], self._rule, self._judge_until_us)


class JudgeBurstShards(beam.PTransform):
    """``(shard, [MaskedTransaction])`` of ``GroupIntoShards`` by account -> ``FraudAlert``.

    The batch path's step after the grouping, on its own so that one grouping by
    account can feed both per-account steps (``beam_pipeline.graph.build_graph``).
    """

    def __init__(
        self, rule: VelocityRule, judge_until_us: Optional[int] = None, label: Optional[str] = None
    ) -> None:
        super().__init__(label)
        self._rule = rule
        self._judge_until_us = judge_until_us

    def expand(
        self, shards: beam.PCollection[Tuple[int, List[MaskedTransaction]]]
    ) -> beam.PCollection[FraudAlert]:
        return shards | "JudgeBursts" >> beam.ParDo(
            _JudgeShardFn(self._rule, self._judge_until_us)
        ).with_output_types(FraudAlert)


class _WindowStatsFn(beam.CombineFn):
    """Count, plus the ``keep`` earliest payments, of one window."""

    def __init__(self, keep: int) -> None:
        self._keep = keep

    def create_accumulator(self) -> Tuple[int, Tuple[TxnRef, ...]]:
        return (0, ())

    def add_input(self, acc: Tuple[int, Tuple[TxnRef, ...]], ref: TxnRef) -> Tuple[int, Tuple[TxnRef, ...]]:
        count, earliest = acc
        merged: List[TxnRef] = sorted(earliest + ((ref[0], ref[1]),))
        return (count + 1, tuple(merged[: self._keep]))

    def merge_accumulators(
        self, accs: Iterable[Tuple[int, Tuple[TxnRef, ...]]]
    ) -> Tuple[int, Tuple[TxnRef, ...]]:
        total, merged = 0, []  # type: int, List[TxnRef]
        for count, earliest in accs:
            total += count
            merged.extend(earliest)
        return (total, tuple(sorted(merged)[: self._keep]))

    def extract_output(self, acc: Tuple[int, Tuple[TxnRef, ...]]) -> Tuple[int, Tuple[TxnRef, ...]]:
        return acc


class _AttachWindowFn(beam.DoFn):
    def process(
        self,
        element: Tuple[str, Tuple[int, Tuple[TxnRef, ...]]],
        window: Any = beam.DoFn.WindowParam,
    ) -> Iterable[Tuple[str, WindowCount]]:
        account_id, (count, earliest) = element
        yield account_id, WindowCount(window.start.micros, window.end.micros, count, earliest)


class _RaiseAlertsFn(beam.DoFn):
    """Judges runs of firing windows; one event-time timer per account.

    The timer wakes at the next crossing, else when the account goes idle.
    (Runners may fire different timers of one key in any order, so expiry is
    not a second timer.) Its input is a pane per window (``windows``
    implementation) or a payment (``state`` implementation, see
    ``_CountAndRaiseFn``).
    """

    # State and timer names are unique across the graph: the FnApiRunner mixes up
    # timers of the same name and key when it fuses two stateful steps into one
    # stage (seen with Beam 2.77: the other step's timers silently never fired).
    TRACKER = ReadModifyWriteStateSpec("velocity_tracker", PickleCoder())
    TIMER_AT = ReadModifyWriteStateSpec("velocity_timer_at_us", PickleCoder())
    WAKE = TimerSpec("velocity_wake", TimeDomain.WATERMARK)

    def __init__(self, rule: VelocityRule, judge_until_us: Optional[int] = None) -> None:
        self._rule = rule
        self._judge_until_us = judge_until_us

    def panes(self, tracker: BurstTracker, element: Any) -> List[WindowCount]:
        pane: WindowCount = element
        tracker.observe(pane)
        return [pane]

    def process(
        self,
        element: Tuple[str, Any],
        tracker_state: Any = beam.DoFn.StateParam(TRACKER),
        timer_at: Any = beam.DoFn.StateParam(TIMER_AT),
        wake: Any = beam.DoFn.TimerParam(WAKE),
    ) -> None:
        tracker: BurstTracker = tracker_state.read() or BurstTracker()
        changed = self.panes(tracker, element[1])
        tracker_state.write(tracker)
        crossings = [c for c in (tracker.crossing_time_us(p, self._rule) for p in changed) if c is not None]
        want = min(crossings) if crossings else tracker.idle_after_us(self._rule)
        pending = timer_at.read()
        if pending is None or want < pending:
            timer_at.write(want)
            wake.set(Timestamp(micros=want))

    @on_timer(WAKE)
    def check_runs(
        self,
        key: Any = beam.DoFn.KeyParam,
        fired_at: Any = beam.DoFn.TimestampParam,
        tracker_state: Any = beam.DoFn.StateParam(TRACKER),
        timer_at: Any = beam.DoFn.StateParam(TIMER_AT),
        wake: Any = beam.DoFn.TimerParam(WAKE),
    ) -> Iterable[FraudAlert]:
        now = fired_at.micros
        tracker: BurstTracker = tracker_state.read() or BurstTracker()
        tracker.watermark_us = max(tracker.watermark_us, now)
        judge = now if self._judge_until_us is None else min(now, self._judge_until_us)
        alerts, next_due = tracker.evaluate(key, self._rule, judge)
        if self._judge_until_us is not None and now > self._judge_until_us:
            next_due = None  # held back for the next run: nothing more to judge here
        idle_at = tracker.idle_after_us(self._rule)
        if now >= idle_at:
            tracker_state.clear()  # every window is closed and judged: forget the account
            timer_at.clear()
        else:
            tracker.prune(self._rule, now)
            tracker_state.write(tracker)
            next_at = next_due if next_due is not None else idle_at
            timer_at.write(next_at)
            wake.set(Timestamp(micros=next_at))
        for alert in alerts:
            telemetry.count("fraud_alerts", rule="velocity")
            yield alert


class _CountAndRaiseFn(_RaiseAlertsFn):
    """The ``state`` implementation: counts each payment into its windows itself."""

    def panes(self, tracker: BurstTracker, element: Any) -> List[WindowCount]:
        return tracker.add_payment(element, self._rule)


IMPLEMENTATIONS = ("windows", "state")


class VelocityFraud(beam.PTransform):
    """``MaskedTransaction`` (event-time stamped) -> one ``FraudAlert`` per burst."""

    def __init__(
        self,
        threshold: int = 3,
        size_s: int = 60,
        period_s: int = 5,
        allowed_lateness_s: int = 10,
        impl: str = "windows",
        judge_until_us: Optional[int] = None,
        batch: bool = False,
        shards: int = DEFAULT_SHARDS,
        label: Optional[str] = None,
    ) -> None:
        """``judge_until_us``: for a run that stops in the middle of a stream (a bounded
        Kafka read), the event time after which bursts are not judged at its end: the
        next run, which replays from before that time, judges them with all their
        payments. ``None``: the input is complete, judge everything.

        ``batch``: the input is bounded and complete; accounts are grouped in ``shards``
        lists and judged with ``judge_bursts`` (``impl`` is then not used)."""
        super().__init__(label)
        self._batch = batch
        self._shards = shards
        self._rule = VelocityRule(threshold, size_s, period_s, allowed_lateness_s)
        self._judge_until_us = judge_until_us
        if impl not in IMPLEMENTATIONS:
            raise ValueError(f"impl must be one of {IMPLEMENTATIONS}, not {impl!r}")
        self._impl = impl

    @property
    def rule(self) -> VelocityRule:
        return self._rule

    def on_shards(self) -> JudgeBurstShards:
        """The batch path's step for records already grouped by account (``GroupIntoShards``)."""
        return JudgeBurstShards(self._rule, self._judge_until_us)

    def expand(self, pcoll: beam.PCollection[MaskedTransaction]) -> beam.PCollection[FraudAlert]:
        rule = self._rule
        if self._batch:  # GroupIntoShards refuses an unbounded input
            return (
                pcoll
                | "ShardByAccount" >> GroupIntoShards(lambda t: t.account_id, self._shards)
                | "Judge" >> self.on_shards()
            )
        keyed = pcoll | "KeyByAccount" >> beam.Map(
            lambda t: (t.account_id, (t.event_time_us, t.transaction_id))
        ).with_output_types(Tuple[str, Tuple[int, str]])
        if self._impl == "state":
            return keyed | "CountAndRaise" >> beam.ParDo(
                _CountAndRaiseFn(rule, self._judge_until_us)
            ).with_output_types(FraudAlert)
        return (
            keyed
            | "SlidingWindows"
            >> beam.WindowInto(
                windows.SlidingWindows(rule.size_s, rule.period_s),
                trigger=triggers.AfterWatermark(early=triggers.AfterCount(1), late=triggers.AfterCount(1)),
                accumulation_mode=triggers.AccumulationMode.ACCUMULATING,
                allowed_lateness=Duration(seconds=rule.allowed_lateness_s),
            )
            | "CountPerWindow" >> beam.CombinePerKey(_WindowStatsFn(rule.threshold))
            | "AttachWindow" >> beam.ParDo(_AttachWindowFn())
            | "GlobalWindow" >> beam.WindowInto(windows.GlobalWindows())
            | "RaiseAlerts"
            >> beam.ParDo(_RaiseAlertsFn(rule, self._judge_until_us)).with_output_types(FraudAlert)
        )
