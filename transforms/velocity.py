"""``VelocityAlerts``: the velocity rule alone, for a pipeline of your own.

The paystream graph runs every fraud rule inside its account step
(``transforms/steps.py``); this transform runs one ``kernels.velocity.VelocityRule``
(``SlidingWindows(60, 5)`` by default) as a step of its own, keyed by account, with the
same state the account books keep for it and an event-time timer that drops an idle
account's state.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Tuple

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from kernels.velocity import VelocityRule
from schemas.records import FraudAlert, MaskedTransaction
from transforms import telemetry

__all__ = ["VelocityAlerts"]


class _VelocityFn(beam.DoFn):
    STATE = ReadModifyWriteStateSpec("velocity_state", PickleCoder())  # [rule state, clock]
    IDLE = TimerSpec("velocity_idle", TimeDomain.WATERMARK)

    def __init__(self, rule: VelocityRule) -> None:
        self._rule = rule

    def process(
        self,
        element: Tuple[str, MaskedTransaction],
        state: Any = beam.DoFn.StateParam(STATE),
        idle: Any = beam.DoFn.TimerParam(IDLE),
    ) -> Iterable[FraudAlert]:
        txn = element[1]
        held = state.read() or [self._rule.new_state(), -(2**62)]
        alert = self._rule.observe(held[0], txn, held[1])
        if txn.event_time_us > held[1]:
            held[1] = txn.event_time_us
            idle.set(Timestamp(micros=held[1] + self._rule.keep_us()))
        state.write(held)
        if alert is not None:
            telemetry.count("fraud_alerts", rule=self._rule.kind)
            yield alert

    @on_timer(IDLE)
    def expire(self, state: Any = beam.DoFn.StateParam(STATE)) -> None:
        state.clear()


class VelocityAlerts(beam.PTransform):
    """``MaskedTransaction`` -> ``FraudAlert``: one alert per burst of ``rule.threshold``
    or more payments of one account in a window of ``SlidingWindows(size, period)``,
    raised on the payment that completes it (``kernels/velocity.py``). Within an
    account, payments are counted in the order the runner delivers them; a payment
    later than the allowed lateness behind the account's latest is not counted::

        >>> import apache_beam as beam
        >>> from apache_beam.testing.util import assert_that, equal_to
        >>> from kernels.velocity import VelocityRule
        >>> from schemas.records import MaskedTransaction, SourceRef
        >>> from transforms.velocity import VelocityAlerts
        >>> def pay(i, second):
        ...     return MaskedTransaction(f"t{i}", "a-1", 100, "EUR", "****-****-****-1111", "tok",
        ...         "us****@example.com", "tok", "1-555-****", "m-1", "5411", "DE", None,
        ...         second * 1_000_000, SourceRef("demo", 0, i))
        >>> with beam.Pipeline() as p:
        ...     alerts = p | beam.Create([pay(0, 0), pay(1, 20), pay(2, 40)]) | VelocityAlerts()
        ...     _ = assert_that(alerts | beam.Map(lambda a: a.transaction_ids), equal_to([("t0", "t1", "t2")]))
    """

    def __init__(self, rule: VelocityRule = VelocityRule(), label: Optional[str] = None) -> None:
        super().__init__(label)
        self._rule = rule

    def expand(self, payments: beam.PCollection[MaskedTransaction]) -> beam.PCollection[FraudAlert]:
        return (
            payments
            | "ByAccount"
            >> beam.Map(lambda t: (t.account_id, t)).with_output_types(Tuple[str, MaskedTransaction])
            | "Velocity" >> beam.ParDo(_VelocityFn(self._rule)).with_output_types(FraudAlert)
        )
