"""The card-testing rule (``kernels/card_testing.py``): its kernel on hand-made cases, a
plain recount on random arrival orders, and the whole graph with ``--rules`` in a batch
and a streaming run (the same alerts, in ``fraud_alerts`` beside the velocity ones)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict, List, Optional, Tuple

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_accounts import txn as account_txn

from kernels.books import NEW, AccountBook
from kernels.card_testing import CardTestingRule
from kernels.rules import Rules, rule_class, rules_from_options
from kernels.velocity import VelocityRule
from schemas.records import FraudAlert, MaskedTransaction
from simulator.generator import GeneratorConfig, generate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
US = 1_000_000
T0 = 1_795_000_000 * US
HORIZON = 600 * US
TTL = 86_400 * US
RULE = CardTestingRule(count=4, max_amount_minor=200, window_s=600)


def txn(
    txn_id: str, at_us: int, amount: int = 150, card: str = "card-a", offset: int = 0
) -> MaskedTransaction:
    """A payment of ``acct-1`` on ``card`` (``tests/test_accounts.py``'s, with a card token)."""
    return account_txn(txn_id, at_us, offset=offset, amount=amount)._replace(card_token=card)


def decide(payments: List[MaskedTransaction], rules: Any = RULE) -> List[FraudAlert]:
    rules = rules if isinstance(rules, Rules) else Rules((rules,))
    book, alerts = AccountBook(), []
    for p in payments:
        verdict, _, raised = book.decide(p, f"fp-{p.transaction_id}", rules, HORIZON, TTL)
        assert verdict == NEW
        alerts.extend(raised)
    return alerts


def test_four_small_payments_on_one_card_within_ten_minutes_raise_one_alert() -> None:
    payments = [txn(f"t{i}", T0 + i * 120 * US, offset=i) for i in range(6)]  # every 2 minutes
    alerts = decide(payments)
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.rule == "card_testing:4 under 2.00 in 600s"
    assert json.loads(alert.rule_params) == {"count": 4, "max_amount_minor": 200, "window_s": 600}
    assert alert.crossing_txn_time_us == T0 + 3 * 120 * US  # the fourth
    assert alert.transaction_ids == ("t0", "t1", "t2", "t3")
    assert alert.window_start_us == T0 and alert.window_end_us == T0 + 600 * US
    assert alert.threshold == 4 and alert.matched_count == 4


def test_large_payments_other_cards_and_a_wide_spread_raise_nothing() -> None:
    assert decide([txn(f"big{i}", T0 + i * US, amount=200) for i in range(10)]) == []  # 2.00 is not under
    assert decide([txn(f"c{i}", T0 + i * US, card=f"card-{i}") for i in range(10)]) == []
    assert decide([txn(f"s{i}", T0 + i * 201 * US) for i in range(10)]) == []  # never 4 within 600 s


def test_a_burst_is_one_alert_until_a_window_passes_without_a_small_payment() -> None:
    first = [txn(f"a{i}", T0 + i * 60 * US) for i in range(8)]
    later = [txn(f"b{i}", T0 + 8 * 60 * US + 601 * US + i * 60 * US) for i in range(4)]
    alerts = decide(first + later)
    assert [a.transaction_ids[0] for a in alerts] == ["a0", "b0"]
    assert len({a.alert_id for a in alerts}) == 2


def test_the_alert_id_names_the_account_the_card_and_the_burst_so_a_replay_gives_it_again() -> None:
    payments = [txn(f"t{i}", T0 + i * US) for i in range(4)]
    assert decide(payments)[0].alert_id == decide(payments)[0].alert_id
    other_card = [p._replace(card_token="card-b") for p in payments]
    assert decide(other_card)[0].alert_id != decide(payments)[0].alert_id


def test_a_payment_more_than_a_window_late_is_not_counted() -> None:
    now = [txn("now", T0 + 3_600 * US)]
    late = [txn(f"late{i}", T0 + i * US) for i in range(4)]
    assert decide(now + late) == []
    assert len(decide(late)) == 1


def _recount(payments: List[MaskedTransaction], rule: CardTestingRule) -> List[Tuple[str, ...]]:
    """The rule without bisection or pruning: for each payment in arrival order, the small
    ones seen so far on its card within the window that ends at it."""
    seen: Dict[str, List[Tuple[int, str]]] = {}
    bursts: Dict[str, List[List[int]]] = {}
    clock, out, w = -(2**62), [], rule.window_s * US
    for p in payments:
        at = p.event_time_us
        if p.amount_minor < rule.max_amount_minor and at > clock - w:
            small = seen.setdefault(p.card_token, [])
            touched = [b for b in bursts.get(p.card_token, []) if b[0] - w <= at <= b[1] + w]
            small.append((at, p.transaction_id))
            small.sort()
            if touched:
                touched[0][0], touched[0][1] = min(touched[0][0], at), max(touched[0][1], at)
            else:
                inside = [q for q in small if at - w < q[0] <= at]
                if len(inside) >= rule.count:
                    bursts.setdefault(p.card_token, []).append([inside[0][0], at])
                    out.append(tuple(q[1] for q in inside[: rule.count]))
        clock = max(clock, at)
    return out


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3_000), st.sampled_from([50, 150, 199, 200, 5_000]), st.sampled_from("ab")),
        min_size=1,
        max_size=40,
    )
)
def test_the_kernel_agrees_with_a_plain_recount(draws: List[Tuple[int, int, str]]) -> None:
    payments = [
        txn(f"t{i}", T0 + s * US, amount=a, card=f"card-{c}", offset=i) for i, (s, a, c) in enumerate(draws)
    ]
    rule = CardTestingRule(count=3, max_amount_minor=200, window_s=300)
    assert [a.transaction_ids for a in decide(payments, rule)] == _recount(payments, rule)


def test_both_rules_run_on_the_same_payments_in_their_order() -> None:
    rules = Rules((VelocityRule(threshold=3, size_s=60, period_s=5, allowed_lateness_s=10), RULE))
    payments = [txn(f"t{i}", T0 + i * 5 * US) for i in range(4)]  # 4 small in 15 s: both
    alerts = decide(payments, rules)
    assert [a.rule.split(":")[0] for a in alerts] == ["velocity", "card_testing"]


class _Opts:
    rules = "velocity,card_testing"
    velocity_threshold, velocity_window_s, velocity_period_s, allowed_lateness_s = 3, 60, 5, 10
    card_testing_count, card_testing_max_amount, card_testing_window_s = 5, "1.50", 300


def test_rules_come_from_the_options_and_the_registry() -> None:
    rules = rules_from_options(_Opts())
    assert [r.kind for r in rules] == ["velocity", "card_testing"]
    assert rules[1] == CardTestingRule(count=5, max_amount_minor=150, window_s=300)
    assert rule_class("card_testing") is CardTestingRule
    with pytest.raises(ValueError, match="unknown rule"):
        rule_class("nope")
    bad = _Opts()
    bad.card_testing_max_amount = "1.005"
    with pytest.raises(ValueError, match="two decimals"):
        rules_from_options(bad)
    twice = _Opts()
    twice.rules = "velocity,velocity"
    with pytest.raises(ValueError, match="twice"):
        rules_from_options(twice)


def _card_testing_input(path: str) -> Optional[str]:
    """Simulated payments, and one account testing a card: six payments of 1.00 a minute apart."""
    records, _ = generate(GeneratorConfig(num_events=600, accounts=60, seed=7))
    lines = [r.payload for r in records if b"\n" not in r.payload]
    base = json.loads(next(r.payload for r in records if r.kind == "valid"))
    for i in range(6):
        p = dict(base, transaction_id=f"txn-testing-{i}", account_id="acct-testing", amount="1.00")
        p["event_time"] = f"2026-11-18T00:{i:02d}:00.000Z"
        lines.append(json.dumps(p).encode())
    with open(path, "wb") as handle:
        handle.write(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize(
    "flags", [["--execution_mode=batch"], ["--execution_mode=stream"]], ids=["batch", "stream"]
)
def test_the_whole_graph_writes_card_testing_alerts_beside_velocity_ones(
    tmp_path: Any, flags: List[str]
) -> None:
    source = _card_testing_input(str(tmp_path / "payments.jsonl"))
    key = tmp_path / "hmac.key"
    key.write_text("ab" * 32)
    warehouse = str(tmp_path / "w.duckdb")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "beam_pipeline",
            "--source=file",
            f"--input={source}",
            "--rules=velocity,card_testing",
            f"--warehouse=duckdb:{warehouse}",
            f"--hmac_key_file={key}",
            "--max_future_skew_s=1000000000",
            "--no_summary",
            *flags,
        ],
        cwd=str(tmp_path),
        env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    con = duckdb.connect(warehouse, read_only=True)
    rows = con.execute(
        "SELECT rule, account_id, transaction_ids, matched_count, rule_params FROM fraud_alerts "
        "WHERE rule LIKE 'card_testing:%'"
    ).fetchall()
    kinds = dict(
        con.execute("SELECT split_part(rule, ':', 1), count(*) FROM fraud_alerts GROUP BY 1").fetchall()
    )
    con.close()
    assert rows == [
        (
            "card_testing:4 under 2.00 in 600s",
            "acct-testing",
            ["txn-testing-0", "txn-testing-1", "txn-testing-2", "txn-testing-3"],
            4,
            '{"count":4,"max_amount_minor":200,"window_s":600}',
        )
    ]
    assert kinds.get("velocity", 0) > 0  # the velocity rule ran beside it
