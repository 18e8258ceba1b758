"""The velocity rule: ``threshold`` or more payments of one account in a sliding window.

``VelocityRule.observe`` counts each payment into the windows Beam's
``SlidingWindows(size, period)`` assigns it (``window_starts``, checked against
``SlidingWindows.assign`` in the tests). Windows of one account that hold ``threshold``
payments and whose starts are consecutive (``period`` apart) form a *run*; a run is one
burst and raises one alert, at once, on the payment that completes it (the crossing
payment). A run that touches an already-alerted run extends it and raises nothing new.
The alert id is derived from the account, the rule and the start of the run's first
window, so a replay in the same order gives the same ids and the sinks write them once.

The account books run it (``kernels/books.py``); ``transforms.velocity.VelocityAlerts``
runs it alone in a user's own pipeline.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Tuple

from kernels.rules import alert_id, rule_params_json
from schemas.records import FraudAlert, MaskedTransaction

__all__ = ["VelocityRule", "window_starts"]

_US = 1_000_000


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

    # ------------------------------------------------------------ the rule seam (kernels/rules.py)

    kind: ClassVar[str] = "velocity"

    @classmethod
    def from_options(cls, opts: Any) -> VelocityRule:
        """Its flags (``--velocity_*``, ``--allowed_lateness_s``) are the pipeline's own
        (``beam_pipeline/options.py``): the Kafka replay uses them too."""
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
        size_us, period_us, threshold = self.size_us, self.period_us, self.threshold
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
        for start in window_starts(at, size_us, period_us, closed_before):  # the open ones
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


def window_starts(event_time_us: int, size_us: int, period_us: int, after_us: Optional[int] = None) -> range:
    """Starts of the sliding windows that contain ``event_time_us`` (as Beam's
    ``SlidingWindows`` assigns them), latest first; only those after ``after_us`` if given."""
    last = event_time_us - (event_time_us % period_us)
    floor = event_time_us - size_us
    return range(last, floor if after_us is None or after_us < floor else after_us, -period_us)
