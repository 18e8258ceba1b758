"""In-process progress counts for the live progress line of local runs.

Beam metrics reach the driver only when a run ends on the local runners, so
the DoFns also bump these plain counters; a ticker thread in the driver
prints them while the pipeline runs. On distributed runners the counters
stay in the workers and the line shows nothing, which is harmless.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable, Dict, Optional, TextIO

__all__ = ["Ticker", "bump", "snapshot"]

_LOCK = threading.Lock()
_COUNTS: Dict[str, int] = {}


def bump(name: str, n: int = 1) -> None:
    with _LOCK:
        _COUNTS[name] = _COUNTS.get(name, 0) + n


def snapshot() -> Dict[str, int]:
    with _LOCK:
        return dict(_COUNTS)


def reset() -> None:
    with _LOCK:
        _COUNTS.clear()


class Ticker:
    """Prints a progress line every ``interval_s`` while the block runs."""

    def __init__(
        self,
        total: Optional[int] = None,
        interval_s: float = 1.0,
        stream: TextIO = sys.stderr,
        describe: Optional[Callable[[], str]] = None,
    ) -> None:
        """``describe``: what the line says after the elapsed time, instead of this
        process's counts (a job on a cluster, whose steps count elsewhere)."""
        self._describe = describe
        self._total = total
        self._interval_s = interval_s
        self._stream = stream
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="paystream-progress", daemon=True)
        self._started = 0.0
        self._tty = stream.isatty()

    def line(self) -> str:
        elapsed = time.monotonic() - self._started
        if self._describe is not None:
            try:
                return f"[{elapsed:6.1f}s] {self._describe()}"
            except Exception as err:  # noqa: BLE001 - a progress line never ends a run
                return f"[{elapsed:6.1f}s] ({type(err).__name__}: {err})"
        counts = snapshot()
        read = counts.get("read", 0)
        total = f"/{self._total}" if self._total else ""
        rate = read / elapsed if elapsed > 0 else 0.0
        return (
            f"[{elapsed:6.1f}s] read {read}{total} ({rate:,.0f}/s) | "
            f"rows {counts.get('payment_transactions', 0)} | "
            f"alerts {counts.get('fraud_alerts', 0)} | "
            f"dead letters {counts.get('dead_letters', 0)}"
        )

    def _run(self) -> None:
        last, last_at = "", 0.0
        while not self._stop.wait(self._interval_s):
            text = self.line()
            now = time.monotonic()
            # On a terminal the line is redrawn every tick; in a log, a line when the
            # counts change, at most every 5 s.
            if not self._tty and (text == last or now - last_at < 5.0):
                continue
            last, last_at = text, now
            self._stream.write(("\r" + text) if self._tty else (text + "\n"))
            self._stream.flush()

    def __enter__(self) -> Ticker:
        reset()
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._stream.write(("\r" if self._tty else "") + self.line() + "\n")
        self._stream.flush()
