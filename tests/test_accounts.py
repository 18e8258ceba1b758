"""The account step's kernel (``kernels/books.py``): each payment decided on arrival.

The velocity count is checked against a plain recount of every window from the payments
held so far (no bisection, no pruning) on random arrival orders; the runs, alert ids and
dedup verdicts against hand-made cases; the streaming DoFn against the batch driver on
the same input (``tests/test_batch_paths.py::test_whole_graph_batch_equals_stream`` runs
the whole graph both ways).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.books import CONFLICT, DUPLICATE, NEW, AccountBook, SeenIds, decide_in_order
from kernels.rules import Rules
from kernels.velocity import VelocityRule, window_starts
from schemas.records import MaskedTransaction, SourceRef

RULE = VelocityRule(threshold=3, size_s=60, period_s=5, allowed_lateness_s=10)
US = 1_000_000
HORIZON = 600 * US
TTL = 86_400 * US
T0 = 1_700_000_000 * US


def decide(
    book: AccountBook, payment: MaskedTransaction, fingerprint: str, ttl: int = TTL
) -> Tuple[str, Any, Any]:
    """The book's verdict, row and the one alert ``RULE`` raises (or None)."""
    verdict, row, alerts = book.decide(payment, fingerprint, Rules((RULE,)), HORIZON, ttl)
    return verdict, row, (alerts[0] if alerts else None)


def txn(
    txn_id: str, at_us: int, account: str = "acct-1", offset: int = 0, amount: int = 1000
) -> MaskedTransaction:
    return MaskedTransaction(
        transaction_id=txn_id,
        account_id=account,
        amount_minor=amount,
        currency="EUR",
        card_masked="****-****-****-1111",
        card_token="t",
        email_masked="us****@example.com",
        email_token="e",
        phone_masked="1-555-****",
        merchant_id="m1",
        merchant_category="5411",
        country="DE",
        card_country="DE",
        event_time_us=at_us,
        source=SourceRef("payments", 0, offset),
    )


def decide_all(payments: List[MaskedTransaction]) -> List[Tuple[str, Optional[str]]]:
    book = AccountBook()
    out = []
    for p in payments:
        verdict, _, alert = decide(book, p, "fp-" + p.transaction_id)
        out.append((verdict, alert.alert_id if alert else None))
    return out


def expected_id(account: str, first_start_us: int) -> str:
    return hashlib.sha256(f"{account}|{RULE.name}|{first_start_us}".encode()).hexdigest()[:32]


def test_a_burst_alerts_once_on_its_crossing_payment_with_the_id_of_its_first_window() -> None:
    at = T0 + 2 * US  # 2 s into a period
    burst = [txn(f"t{i}", at + i * 300_000, offset=i) for i in range(4)]
    decided = decide_all(burst)
    assert [v for v, _ in decided] == [NEW] * 4
    assert [a is not None for _, a in decided] == [False, False, True, False]  # the 4th extends it
    first_start = window_starts(at, RULE.size_us, RULE.period_us)[-1]
    assert decided[2][1] == expected_id("acct-1", first_start)


def test_the_alert_names_the_crossing_payment_and_its_window() -> None:
    book = AccountBook()
    at = T0 + 1 * US
    alert = None
    for i in range(3):
        _, _, alert = decide(book, txn(f"t{i}", at + i * US, offset=i), f"f{i}")
    assert alert is not None
    assert alert.crossing_txn_time_us == at + 2 * US
    assert alert.transaction_ids == ("t0", "t1", "t2")
    assert alert.window_end_us - alert.window_start_us == RULE.size_us
    assert alert.window_start_us <= at and alert.window_end_us > at + 2 * US
    assert alert.matched_count == 3 and alert.first_txn_time_us == at


def test_copies_within_the_horizon_are_duplicates_or_conflicts_and_later_ones_new() -> None:
    book = AccountBook()
    first = txn("t1", T0)
    assert decide(book, first, "a")[0] == NEW
    assert decide(book, first, "a")[0] == DUPLICATE
    assert decide(book, first, "b")[0] == CONFLICT
    decide(book, txn("t2", T0 + HORIZON + US), "c")  # the clock moves on
    assert decide(book, first, "a")[0] == NEW  # past the horizon: forgotten


def test_the_id_check_catches_a_copy_on_another_account() -> None:
    book = SeenIds()
    assert book.check("t1", "fp-a", T0, HORIZON) == NEW
    assert book.check("t1", "fp-a", T0, HORIZON) == DUPLICATE
    assert book.check("t1", "fp-other-account", T0, HORIZON) == CONFLICT
    book.check("t9", "x", T0 + HORIZON + US, HORIZON)
    book.prune(HORIZON)
    assert "t1" not in book.seen


def test_a_copy_of_a_payment_dated_long_before_the_clock_is_still_caught() -> None:
    """A payment dated more than the horizon before the clock (very late, or its date damaged
    in a copy) is remembered from when it was seen: once it was forgotten at once, so its
    next copy was stored again (two rows of one id: the warehouse kept one, silently)."""
    book, ids = AccountBook(), SeenIds()
    decide(book, txn("now", T0 + 2 * HORIZON), "n")
    ids.check("now", "n", T0 + 2 * HORIZON, HORIZON)
    old = txn("old", T0)
    assert decide(book, old, "o")[0] == NEW
    assert decide(book, old, "o")[0] == DUPLICATE
    assert decide(book, txn("old", T0 + 2 * HORIZON), "o2")[0] == CONFLICT
    assert ids.check("old", "o", T0, HORIZON) == NEW
    assert ids.check("old", "o", T0, HORIZON) == DUPLICATE
    assert ids.check("old", "o-other", T0 + 2 * HORIZON, HORIZON) == CONFLICT
    book.ids.prune(HORIZON)
    ids.prune(HORIZON)
    assert "old" in book.ids.seen and "old" in ids.seen  # kept for the horizon after it was seen


def test_a_payment_late_for_closed_windows_is_kept_but_not_counted() -> None:
    book = AccountBook()
    at = T0
    decide(book, txn("t0", at), "a")
    decide(book, txn("t1", at + 200_000), "b")
    decide(book, txn("now", at + 10 * 60 * US), "c")  # ten minutes later
    verdict, row, alert = decide(book, txn("late", at + 400_000), "d")
    assert verdict == NEW and row is not None and alert is None  # its windows are closed


def test_an_out_of_order_payment_can_cross_and_then_extends_nothing_twice() -> None:
    at = T0 + 3 * US
    payments = [txn("t2", at + 2 * US, offset=0), txn("t0", at, offset=1), txn("t1", at + US, offset=2)]
    decided = decide_all(payments)
    assert [a is not None for _, a in decided] == [False, False, True]


def test_the_history_restarts_after_the_ttl() -> None:
    book = AccountBook()
    decide(book, txn("t0", T0, amount=100), "a", 3600 * US)
    _, row, _ = decide(book, txn("t1", T0 + 60 * US, amount=300), "b", 3600 * US)
    assert row is not None and row.recent_txn_count == 1 and row.amount_to_recent_mean == 3.0
    _, row, _ = decide(book, txn("t2", T0 + 7200 * US), "c", 3600 * US)
    assert row is not None and row.recent_txn_count == 0 and row.seconds_since_prev_txn is None


def _recount(arrived: List[Tuple[int, str, int]], at: int, closed_before: int) -> List[Tuple[int, int]]:
    """Windows holding ``at`` that are open and hold ``threshold`` payments, counted afresh."""
    out = []
    for start in window_starts(at, RULE.size_us, RULE.period_us):
        if start <= closed_before:
            continue
        inside = [p for p in arrived if start <= p[0] < start + RULE.size_us and p[2] < start]
        if len(inside) >= RULE.threshold:
            out.append((start, len(inside)))
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=400), min_size=1, max_size=25))
def test_alerts_equal_a_plain_recount_of_every_window(offsets_s: List[int]) -> None:
    """Random arrival orders (times within 400 s, so late and out-of-order payments happen):
    the book's alerts equal a recount from every payment held, with runs merged the same way."""
    book = AccountBook()
    arrived: List[Tuple[int, str, int]] = []
    runs: List[List[int]] = []
    clock = -(2**62)
    for i, offset in enumerate(offsets_s):
        at = T0 + offset * US // 4
        p = txn(f"t{i}", at, offset=i)
        _, _, alert = decide(book, p, f"f{i}")
        closed_before = clock - RULE.allowed_lateness_s * US - RULE.size_us
        expected = None
        if at - at % RULE.period_us > closed_before:
            arrived.append((at, p.transaction_id, closed_before))
            firing = _recount(arrived, at, closed_before)
            if firing:
                first, last = firing[-1][0], firing[0][0]
                touched = [
                    r for r in runs if first <= r[1] + RULE.period_us and last >= r[0] - RULE.period_us
                ]
                if touched:
                    touched[0][0], touched[0][1] = min(touched[0][0], first), max(touched[0][1], last)
                else:
                    runs.append([first, last])
                    expected = expected_id("acct-1", first)
        clock = max(clock, at)
        assert (alert.alert_id if alert else None) == expected


def test_decide_in_order_follows_where_payments_were_read_not_the_list_order() -> None:
    at = T0 + US
    payments = [txn(f"t{i}", at + i * US, offset=i) for i in range(3)]
    forwards = [
        (a[0].alert_id if a else None)
        for _, _, _, a in decide_in_order([(p, "") for p in payments], Rules((RULE,)), HORIZON, TTL)
    ]
    backwards = [
        (a[0].alert_id if a else None)
        for _, _, _, a in decide_in_order([(p, "") for p in reversed(payments)], Rules((RULE,)), HORIZON, TTL)
    ]
    assert forwards == backwards and forwards[2] is not None


def _conflict_input(path: str) -> None:
    import json as _json

    from tests.test_parse import good

    now = "2026-11-25T08:00:00Z"
    lines = [
        good(transaction_id="txn-x", account_id="acct-a", event_time=now),
        good(transaction_id="txn-x", account_id="acct-b", event_time=now),  # another account
        good(transaction_id="txn-y", account_id="acct-a", amount="1.00", event_time=now),
        good(transaction_id="txn-y", account_id="acct-a", amount="2.00", event_time=now),  # same account
        good(transaction_id="txn-y", account_id="acct-a", amount="1.00", event_time=now),  # exact copy
        good(transaction_id="txn-z", account_id="acct-b", event_time=now),
    ]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(_json.dumps(line) for line in lines) + "\n")


def _run_graph(
    tmp: str, mode_args: List[str], scope: str
) -> Tuple[List[Tuple[str, str]], List[Tuple[str, str]]]:
    import os
    import subprocess
    import sys

    import duckdb

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    warehouse = os.path.join(tmp, f"{scope}-{'-'.join(a.strip('-') for a in mode_args)}.duckdb")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "beam_pipeline",
            "--source=file",
            f"--input={os.path.join(tmp, 'in.jsonl')}",
            f"--warehouse=duckdb:{warehouse}",
            f"--dedup_scope={scope}",
            "--no_summary",
            *mode_args,
        ],
        cwd=tmp,
        env=dict(os.environ, PYTHONPATH=root),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    conn = duckdb.connect(warehouse, read_only=True)
    try:
        rows = conn.execute(
            "SELECT transaction_id, account_id FROM payment_transactions ORDER BY 1, 2"
        ).fetchall()
        letters = conn.execute("SELECT transaction_id, message FROM dead_letters ORDER BY 1, 2").fetchall()
    finally:
        conn.close()
    return rows, letters


@pytest.mark.parametrize(
    "mode_args", [["--execution_mode=batch"], ["--execution_mode=stream"], ["--streaming"]]
)
def test_copies_and_conflicts_through_the_whole_graph(tmp_path: Any, mode_args: List[str]) -> None:
    """A copy on the same account is a duplicate or a conflict; with the global scope (the
    default) a copy on another account is a conflict too, and only the first is stored."""
    tmp = str(tmp_path)
    _conflict_input(os.path.join(tmp, "in.jsonl"))
    rows, letters = _run_graph(tmp, mode_args, "global")
    assert rows == [("txn-x", "acct-a"), ("txn-y", "acct-a"), ("txn-z", "acct-b")]
    assert [(t, m.split(" with different content")[1]) for t, m in letters] == [
        ("txn-x", " for another account"),
        ("txn-y", " on this account"),
    ]
    rows, letters = _run_graph(tmp, mode_args, "account")
    # Not caught by the books: both copies leave as rows; the warehouse keeps the first one
    # written and dead-letters the other, whichever that is (hence the global scope by default)
    assert [t for t, _ in rows] == ["txn-x", "txn-y", "txn-z"]
    assert [(t, m.split(" with different content")[1]) for t, m in letters] == [
        ("txn-x", " in the warehouse (beyond the dedup horizon)"),
        ("txn-y", " on this account"),
    ]


def test_a_book_checkpointed_before_the_rule_seam_restores_with_its_velocity_state() -> None:
    """A Flink checkpoint of the previous version holds books pickled as (seen, history,
    held, runs, clock): restored, the velocity rule goes on from them."""
    book = AccountBook()
    for i in range(2):
        decide(book, txn(f"t{i}", T0 + i * US), f"f{i}")
    seen, history, states, clock = book.__getstate__()
    old = AccountBook.__new__(AccountBook)
    old.__setstate__((seen, history, states[0][0], states[0][1], clock))
    _, _, alert = decide(old, txn("t2", T0 + 2 * US), "f2")
    assert alert is not None and alert.transaction_ids == ("t0", "t1", "t2")


def test_the_id_check_tells_a_forgotten_copy_from_a_conflict_on_its_account() -> None:
    """A copy its account's book forgot reaches the id check: the same content is a copy
    seen again; other content on the same account is a conflict there, not a copy."""
    from kernels.books import check_ids
    from kernels.features import AccountHistory, features

    first = features(txn("t1", T0), AccountHistory())
    copy = features(txn("t1", T0)._replace(source=first.txn.source._replace(offset=99)), AccountHistory())
    other = features(txn("t1", T0)._replace(amount_minor=first.txn.amount_minor + 1), AccountHistory())
    elsewhere = features(txn("t1", T0)._replace(account_id="acct-elsewhere"), AccountHistory())
    ids = SeenIds()
    kept, again, conflicts = check_ids(ids, [first, copy, other, elsewhere], HORIZON)
    assert kept == [first] and again == 1
    assert conflicts == [(other, " on this account"), (elsewhere, " for another account")]
    # an id marked by an older version, with its account alone: a replay of its row
    old = SeenIds()
    old.seen["t1"], old.clock_us = (first.txn.account_id, T0), T0
    assert check_ids(old, [other], HORIZON) == ([], 1, [])
