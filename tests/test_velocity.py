"""The velocity rule: window arithmetic, the burst rule, and ``VelocityAlerts`` alone.

Times are seconds after T0 = 2026-11-24T10:00:00Z; windows are 60 s sliding
by 5 s, threshold 3, allowed lateness 10 s unless a case says otherwise.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from kernels.velocity import VelocityRule, window_starts
from schemas.records import FraudAlert, MaskedTransaction, SourceRef
from transforms.velocity import VelocityAlerts

T0 = 1_795_514_400  # seconds; a multiple of 60
US = 1_000_000
RULE = VelocityRule()


def txn(account: str, at_s: float, n: int) -> MaskedTransaction:
    return MaskedTransaction(
        transaction_id=f"{account}-{n}",
        account_id=account,
        amount_minor=1000,
        currency="USD",
        card_masked="****-****-****-1111",
        card_token="c",
        email_masked="ja****@example.com",
        email_token="e",
        phone_masked="1-555-****",
        merchant_id="m-1",
        merchant_category="5411",
        country="US",
        card_country="US",
        event_time_us=int((T0 + at_s) * US),
        source=SourceRef("payments", 0, n),
    )


# --- plain window arithmetic --------------------------------------------------------------


def test_window_starts_match_beam() -> None:
    from apache_beam.transforms.window import SlidingWindows

    fn = SlidingWindows(60, 5)
    for at in (0.0, 4.999, 5.0, 59.5, 61.25):
        t = int((T0 + at) * US)
        beam_starts = sorted(
            w.start.micros for w in fn.assign(SlidingWindows.AssignContext(Timestamp(micros=t)))
        )
        assert sorted(window_starts(t, 60 * US, 5 * US)) == beam_starts
        assert len(beam_starts) == 12


def _alerts_for(times: Sequence[float], rule: VelocityRule = RULE) -> List[FraudAlert]:
    """The rule's alerts for one account's payments, in the order given."""
    state, clock, alerts = rule.new_state(), -(2**62), []
    for i, t in enumerate(times):
        payment = txn("a", t, i)
        alert = rule.observe(state, payment, clock)
        clock = max(clock, payment.event_time_us)
        if alert is not None:
            alerts.append(alert)
    return alerts


# Timelines: one character per 5 s from T0 - 5 s; "x" a payment, "|" a minute edge.
@pytest.mark.parametrize(
    "times, n_alerts",
    [
        #             |x.x.x.......|
        pytest.param([0, 10, 20], 1, id="burst-inside-one-window"),
        #             |...........x|x.x
        pytest.param([58, 62, 66], 1, id="burst-across-a-minute-edge"),
        #             |x.....x.....|x
        pytest.param([0, 30, 61], 0, id="three-in-61s-is-not-velocity"),
        #             |x.....x....x|   (0, 30, 59.9: one window [0, 60) holds all three)
        pytest.param([0, 30, 59.9], 1, id="three-in-59.9s-is"),
        #             |xx.........|..........x|
        pytest.param([0, 5, 130], 0, id="two-then-one-later"),
        #             |xxx...|...  ...|xxx
        pytest.param([0, 5, 10, 300, 305, 310], 2, id="two-bursts-two-alerts"),
        #             |xxxxxxxxxxxxx|xxxxxxxx  one long burst
        pytest.param([i * 5 for i in range(21)], 1, id="continuous-velocity-is-one-burst"),
        #             |xxxxxx| six in 25 s: one burst, not two
        pytest.param([0, 5, 10, 15, 20, 25], 1, id="six-in-25s-one-alert"),
    ],
)
def test_burst_rule(times: List[float], n_alerts: int) -> None:
    assert len(_alerts_for(times)) == n_alerts


def test_alert_content() -> None:
    """Raised at once on the crossing payment; a fourth payment extends the burst."""
    (alert,) = _alerts_for([0, 10, 20, 25])
    assert alert.transaction_ids == ("a-0", "a-1", "a-2")
    assert alert.crossing_txn_time_us == (T0 + 20) * US
    assert alert.first_txn_time_us == T0 * US
    assert alert.window_start_us == (T0 - 35) * US  # first window holding 0, 10 and 20
    assert alert.matched_count == 3
    assert alert.rule == "velocity:3 in 60s/5s"


def test_a_payment_behind_the_closed_windows_is_not_counted() -> None:
    """Late = more than the window and the allowed lateness behind the account's latest."""
    assert len(_alerts_for([200, 0, 10, 20])) == 0  # 0, 10, 20 arrive after 200: closed
    assert len(_alerts_for([75, 20, 30])) == 1  # 20 and 30 are within the lateness of 75


def test_rule_validation() -> None:
    for bad in (
        dict(threshold=1),
        dict(size_s=60, period_s=7),
        dict(period_s=0),
        dict(allowed_lateness_s=-1),
    ):
        with pytest.raises(ValueError):
            VelocityRule(**bad)  # type: ignore[arg-type]


# --- VelocityAlerts alone, in batch and with TestStream --------------------------------------


def test_velocity_alerts_in_batch() -> None:
    txns = [txn("a", t, i) for i, t in enumerate([0, 10, 20, 300, 305, 310])] + [
        txn("b", t, i) for i, t in enumerate([0, 30, 61])
    ]
    with TestPipeline() as p:
        alerts = (
            p | beam.Create(txns) | VelocityAlerts() | beam.Map(lambda a: (a.account_id, a.transaction_ids))
        )
        assert_that(alerts, equal_to([("a", ("a-0", "a-1", "a-2")), ("a", ("a-3", "a-4", "a-5"))]))


def test_velocity_alerts_equal_the_account_books_on_simulated_traffic() -> None:
    """The transform runs the same kernel as the engine's account books: the same alerts."""
    from kernels.books import decide_in_order
    from kernels.parse import ParseError, parse_payment
    from kernels.rules import Rules
    from simulator.generator import GeneratorConfig, generate

    records, truth = generate(GeneratorConfig(num_events=1500, accounts=200, seed=5))
    txns, seen = [], set()
    for i, r in enumerate(records):
        try:
            t = parse_payment(r.payload, SourceRef("sim", 0, i), 2**62)
        except ParseError:
            continue
        if t.transaction_id not in seen:
            seen.add(t.transaction_id)
            txns.append(
                txn(t.account_id, (t.event_time_us / US) - T0, i)._replace(transaction_id=t.transaction_id)
            )
    decided = decide_in_order([(t, t.transaction_id) for t in txns], Rules((RULE,)), 600 * US, 86_400 * US)
    expected = [alert.alert_id for _, _, _, alerts in decided for alert in alerts]
    assert len(expected) == len(truth.bursts)
    with TestPipeline() as p:
        ids = p | beam.Create(txns) | VelocityAlerts(RULE) | beam.Map(lambda a: a.alert_id)
        assert_that(ids, equal_to(expected))


class _WithTimestamp(beam.DoFn):
    def process(self, alert, timestamp=beam.DoFn.TimestampParam):  # type: ignore[no-untyped-def]
        yield (alert.account_id, alert.transaction_ids, timestamp.micros)


def _stream(events: List[Tuple[str, object]]) -> TestStream:
    stream = TestStream()
    for kind, value in events:
        if kind == "add":
            t = value  # type: ignore[assignment]
            stream = stream.add_elements([TimestampedValue(t, Timestamp(micros=t.event_time_us))])  # type: ignore[attr-defined]
        elif kind == "watermark":
            stream = stream.advance_watermark_to(Timestamp(micros=int((T0 + value) * US)))  # type: ignore[operator]
    return stream.advance_watermark_to_infinity()


START = [("watermark", -60)]


@pytest.mark.parametrize(
    "events, expected",
    [
        pytest.param(
            START + [("add", txn("a", 0, 0)), ("add", txn("a", 10, 1)), ("add", txn("a", 20, 2))],
            [("a", ("a-0", "a-1", "a-2"), (T0 + 20) * US)],
            id="burst-inside-one-window-alerted-at-the-crossing",
        ),
        pytest.param(
            START + [("add", txn("a", 58, 0)), ("add", txn("a", 62, 1)), ("add", txn("a", 66, 2))],
            [("a", ("a-0", "a-1", "a-2"), (T0 + 66) * US)],
            id="burst-across-window-edge",
        ),
        pytest.param(
            START
            + [("add", txn("a", 20, 2)), ("add", txn("a", 0, 0)), ("watermark", 5), ("add", txn("a", 10, 1))],
            [("a", ("a-0", "a-1", "a-2"), (T0 + 10) * US)],
            id="out-of-order",
        ),
        pytest.param(
            START
            + [
                ("add", txn("a", 0, 0)),
                ("add", txn("a", 10, 1)),
                ("watermark", 65),
                ("add", txn("a", 20, 2)),
            ],
            [("a", ("a-0", "a-1", "a-2"), (T0 + 20) * US)],
            id="the-watermark-does-not-close-an-account's-windows",
        ),
        pytest.param(
            START
            + [("add", txn("a", 0, 0)), ("add", txn("a", 10, 1)), ("add", txn("a", 200, 3))]
            + [("watermark", 200), ("add", txn("a", 20, 2))],
            [],
            id="late-after-allowed-lateness",
        ),
        pytest.param(
            START
            + [("add", txn("a", t, i)) for i, t in enumerate([0, 5, 10, 15, 20, 25])]
            + [("watermark", 26), ("add", txn("b", 30, 0)), ("watermark", 500)],
            [("a", ("a-0", "a-1", "a-2"), (T0 + 10) * US)],
            id="burst-of-six-one-alert",
        ),
    ],
)
def test_stream_scenarios(
    events: List[Tuple[str, object]], expected: List[Tuple[str, Tuple[str, ...], int]]
) -> None:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        out = p | _stream(events) | VelocityAlerts() | beam.ParDo(_WithTimestamp())
        assert_that(out, equal_to(expected))
