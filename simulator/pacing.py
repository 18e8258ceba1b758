"""Rate control for the producer: a target rate that can change while it runs."""

from __future__ import annotations

import threading
import time
from typing import Callable

__all__ = ["TICK_S", "Pacer"]

# Each tick's messages leave together, as one produce request to the broker: the client's
# cost is per request, so the tick sets the producer's CPU. At 1,000 messages/s, steady
# state, against a local broker: 10 ms ticks 0.126-0.132 of a core, 20 ms 0.099-0.108,
# 50 ms 0.078 (docs/performance.md, "The load generator").
TICK_S = 0.05


class Pacer:
    """Says how many messages may go now to hold ``rate`` messages per second.

    Time is cut into ticks (``TICK_S`` by default); each tick allows the messages
    the rate owes since the last change, so a change takes effect on the next
    tick and a slow tick is caught up (up to one second of backlog, not more:
    a stalled producer does not burst afterwards).
    """

    def __init__(
        self, rate: float, tick_s: float = TICK_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate < 0:
            raise ValueError("rate must be >= 0")
        self._lock = threading.Lock()
        self._clock = clock
        self._tick_s = tick_s
        self._rate = float(rate)
        self._since = clock()
        self._sent_since = 0
        self.changed_at = self._since

    @property
    def rate(self) -> float:
        with self._lock:
            return self._rate

    def set_rate(self, rate: float) -> None:
        if rate < 0:
            raise ValueError("rate must be >= 0")
        with self._lock:
            self._rate = float(rate)
            self._since = self._clock()
            self._sent_since = 0
            self.changed_at = self._since

    def allowance(self) -> int:
        """Messages that may be sent now (0 means: wait a tick)."""
        with self._lock:
            elapsed = self._clock() - self._since
            owed = int(elapsed * self._rate) - self._sent_since
            return max(0, min(owed, int(self._rate) + 1))

    def sent(self, n: int) -> None:
        with self._lock:
            self._sent_since += n
            # keep the debt bounded to one second of messages
            floor = int((self._clock() - self._since) * self._rate) - int(self._rate) - 1
            if self._sent_since < floor:
                self._sent_since = floor

    def wait_tick(self) -> None:
        time.sleep(self._tick_s)
