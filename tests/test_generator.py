"""Tests of the payment simulator: determinism, labels and every injection.

The checks recompute what the ground truth claims from the raw payloads, so a
generator that mislabels its output fails here.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.generate import main
from simulator.generator import (
    BURST_ISOLATION_US,
    BURST_MAX_SIZE,
    BURST_MAX_SPAN_US,
    BURST_MIN_SIZE,
    CURRENCIES,
    MALFORMED_KINDS,
    MAX_PAYLOAD_BYTES,
    MESSAGE_FIELDS,
    NORMAL_MIN_GAP_US,
    PII_FIELDS,
    GeneratorConfig,
    GroundTruth,
    SimRecord,
    generate,
    iter_payloads,
    luhn_complete,
    luhn_valid,
)

REPO = Path(__file__).resolve().parents[1]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WINDOW_US = 60_000_000
JITTER_US = 2_000_000
DAY_US = 86_400_000_000

TXN_ID = re.compile(r"txn-[0-9a-f]{20}")
ACCOUNT_ID = re.compile(r"acct-\d{6}")
MERCHANT_ID = re.compile(r"m-\d{5}")
AMOUNT_TEXT = re.compile(r"\d+\.\d{2}")
EMAIL = re.compile(r"[a-z]+\.[a-z]+\d+@[a-z.]+\.(example|test|com|org|net)")
PHONE = re.compile(r"\+\d{1,3}-\d{1,3}-\d{3,4}-\d{4}")
COUNTRY = re.compile(r"[A-Z]{2}")


@pytest.fixture(scope="module")
def default_run() -> tuple[list[SimRecord], GroundTruth]:
    return generate(GeneratorConfig())


@pytest.fixture(scope="module")
def run_1000() -> tuple[list[SimRecord], GroundTruth]:
    return generate(GeneratorConfig(num_events=1000, seed=7))


# --------------------------------------------------------------------------- helpers


def time_us(text: str) -> int:
    """Microseconds since the epoch of an RFC 3339 time that must carry an offset."""
    parsed = datetime.fromisoformat(text)
    assert parsed.tzinfo is not None, text
    return (parsed - EPOCH) // timedelta(microseconds=1)


def amount_decimal(value: Any) -> Decimal | None:
    """The amount as a Decimal if it has the form the parser accepts, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if not AMOUNT_TEXT.fullmatch(value):
            return None
        return Decimal(value)
    if isinstance(value, int | float):
        d = Decimal(repr(value))
        return d if d.as_tuple().exponent >= -2 else None  # type: ignore[operator]
    return None


def defects(obj: dict[str, Any], future_after_us: int) -> set[str]:
    """The dead-letter reasons a dict-shaped message deserves (empty if valid)."""
    found: set[str] = set()
    if set(MESSAGE_FIELDS) - obj.keys():
        found.add("missing_field")
    card = obj.get("card_number")
    if card is not None and not (isinstance(card, str) and luhn_valid(card)):
        found.add("invalid_card_number")
    if "amount" in obj:
        amount = amount_decimal(obj["amount"])
        if amount is None or amount <= 0:
            found.add("invalid_amount")
    if "currency" in obj and obj["currency"] not in CURRENCIES:
        found.add("invalid_currency")
    if "event_time" in obj:
        try:
            parsed = datetime.fromisoformat(obj["event_time"])
        except ValueError:
            found.add("invalid_event_time")
        else:
            if parsed.tzinfo is None:
                found.add("invalid_event_time")
            elif time_us(obj["event_time"]) > future_after_us:
                found.add("event_time_in_future")
    return found


def check_valid_payload(rec: SimRecord) -> dict[str, Any]:
    obj = json.loads(rec.payload.decode("utf-8"))
    assert isinstance(obj, dict)
    assert tuple(obj) == MESSAGE_FIELDS
    assert b"\n" not in rec.payload
    assert obj["transaction_id"] == rec.transaction_id and TXN_ID.fullmatch(obj["transaction_id"])
    assert ACCOUNT_ID.fullmatch(obj["account_id"])
    assert MERCHANT_ID.fullmatch(obj["merchant_id"])
    amount = amount_decimal(obj["amount"])
    assert amount is not None and amount > 0, obj["amount"]
    assert obj["currency"] in CURRENCIES
    card = obj["card_number"]
    assert card.isdigit() and luhn_valid(card), card
    amex = len(card) == 15 and card[:2] in ("34", "37")
    assert len(card) in (15, 16, 19)
    assert len(card) != 15 or amex
    assert obj["cvv"].isdigit() and len(obj["cvv"]) == (4 if amex else 3)
    assert EMAIL.fullmatch(obj["email"]), obj["email"]
    assert PHONE.fullmatch(obj["phone"]), obj["phone"]
    assert re.fullmatch(r"\d{4}", obj["merchant_category"])
    assert COUNTRY.fullmatch(obj["country"]) and COUNTRY.fullmatch(obj["card_country"])
    assert time_us(obj["event_time"]) == rec.event_time_us
    return obj


def check_malformed_as_claimed(rec: SimRecord, future_after_us: int) -> None:
    """The payload is broken in exactly the way its label says."""
    kind = rec.malformed_kind
    assert kind in MALFORMED_KINDS
    assert b"\n" not in rec.payload
    if kind == "not_utf8":
        assert b"\xff\xfe" in rec.payload
        with pytest.raises(UnicodeDecodeError):
            rec.payload.decode("utf-8")
        # otherwise JSON-looking: without the bad bytes it is a valid message
        repaired = json.loads(rec.payload.replace(b"\xff\xfe", b""))
        assert defects(repaired, future_after_us) == set()
        return
    text = rec.payload.decode("utf-8")
    if kind in ("not_json", "truncated_json"):
        with pytest.raises(ValueError):
            json.loads(text)
        assert any(ch.isdigit() for ch in text) and "@" in text  # carries PII
        return
    value = json.loads(text)
    if kind == "json_array":
        assert isinstance(value, list) and isinstance(value[0], dict)
        assert defects(value[0], future_after_us) == set()
        return
    assert isinstance(value, dict)
    if kind == "oversized":
        assert MAX_PAYLOAD_BYTES < len(rec.payload) <= MAX_PAYLOAD_BYTES + 1024
        assert defects(value, future_after_us) == set()
        return
    assert defects(value, future_after_us) == {MALFORMED_KINDS[kind]}, value
    if kind == "naive_timestamp":
        assert datetime.fromisoformat(value["event_time"]).tzinfo is None
    if kind == "too_many_decimals":
        assert re.fullmatch(r"\d+\.\d{3}", value["amount"])
    if kind == "future_timestamp":
        assert time_us(value["event_time"]) == rec.event_time_us


def max_in_window(times: list[int]) -> tuple[int, list[tuple[int, int]]]:
    """Largest count of sorted ``times`` within any closed 60 s span, and the spans reaching 3."""
    best, spans, lo = 0, [], 0
    for hi, t in enumerate(times):
        while t - times[lo] > WINDOW_US:
            lo += 1
        best = max(best, hi - lo + 1)
        if hi - lo + 1 >= 3:
            spans.append((lo, hi))
    return best, spans


def check_invariants(config: GeneratorConfig, records: list[SimRecord], truth: GroundTruth) -> None:
    """Everything the generator promises, recomputed from the payloads."""
    kinds = Counter(r.kind for r in records)
    assert set(kinds) <= {"valid", "duplicate", "malformed"}
    assert len(records) == config.num_events
    assert kinds["valid"] + kinds["duplicate"] + kinds["malformed"] == config.num_events
    assert truth.duplicates == kinds["duplicate"]
    assert truth.malformed == dict(
        Counter(MALFORMED_KINDS[r.malformed_kind] for r in records if r.malformed_kind)
    )

    # valid records: well formed, unique ids, stable identity per account
    valid = [r for r in records if r.kind == "valid"]
    objs = {str(r.transaction_id): check_valid_payload(r) for r in valid}
    assert len(objs) == len(valid)
    # the parser rejects ids holding a 12+ digit run (it could be a card number)
    assert not any(re.search(r"[0-9]{12}", txn_id) for txn_id in objs)
    assert set(objs) == truth.valid_transaction_ids
    identity: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for obj in objs.values():
        identity[obj["account_id"]].add(
            tuple(obj[f] for f in ("card_number", "cvv", "email", "phone", "card_country"))
        )
    assert all(len(v) == 1 for v in identity.values())
    for f in PII_FIELDS:
        assert {obj[f] for obj in objs.values()} <= truth.pii[f]

    # duplicates: byte-identical to an earlier valid payload, at most 8 originals later
    first_seen: dict[bytes, int] = {}
    originals = 0  # non-duplicate records emitted so far
    for rec in records:
        if rec.kind == "duplicate":
            assert rec.payload in first_seen, "duplicate before (or without) its original"
            assert 0 <= originals - first_seen[rec.payload] <= 8
            assert rec.transaction_id in truth.valid_transaction_ids
            assert rec.malformed_kind is None
            continue
        originals += 1
        if rec.kind == "valid":
            first_seen[rec.payload] = originals
    assert len({r.payload for r in records if r.kind == "duplicate"}) == kinds["duplicate"]

    # malformed: as claimed, never duplicated, ids not valid, PII accounted for
    last_valid_us = max((r.event_time_us for r in valid if r.event_time_us), default=0)
    malformed = [r for r in records if r.kind == "malformed"]
    assert len({r.payload for r in malformed}) == len(malformed)
    for rec in malformed:
        check_malformed_as_claimed(rec, last_valid_us + DAY_US - 1)
        assert rec.transaction_id not in truth.valid_transaction_ids
        assert rec.transaction_id is not None and TXN_ID.fullmatch(rec.transaction_id)
        assert rec.burst_id is None and not rec.late
        leaked = [v for f in PII_FIELDS for v in truth.pii[f] if v.encode() in rec.payload]
        assert any("@" in v for v in leaked) and any(len(v) >= 15 for v in leaked)
    kinds_allowed = set(MALFORMED_KINDS) - ({"oversized"} if not config.include_oversized else set())
    assert {r.malformed_kind for r in malformed} <= kinds_allowed
    assert sum(r.malformed_kind == "oversized" for r in malformed) <= 1
    if config.num_events >= 200 and config.malformed_rate > 0:
        assert {r.malformed_kind for r in malformed} == kinds_allowed

    # bursts: recompute velocity per account from the unique valid payments
    by_account: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for txn_id, obj in objs.items():
        by_account[obj["account_id"]].append((time_us(obj["event_time"]), txn_id))
    burst_by_account = {b.account_id: b for b in truth.bursts}
    assert len(burst_by_account) == len(truth.bursts), "one burst per account"
    assert len(truth.bursts) <= max(3, config.num_events // 200)
    for account, rows in by_account.items():
        rows.sort()
        times = [t for t, _ in rows]
        best, spans = max_in_window(times)
        burst = burst_by_account.get(account)
        if burst is None:
            assert best < 3, account
            assert all(b - a >= NORMAL_MIN_GAP_US for a, b in itertools.pairwise(times))
            continue
        assert best >= 3
        members = set(burst.transaction_ids)
        for lo, hi in spans:
            assert {txn for _, txn in rows[lo : hi + 1]} <= members
        others = [t for t, txn in rows if txn not in members]
        assert all(
            t < burst.first_time_us - BURST_ISOLATION_US or t > burst.last_time_us + BURST_ISOLATION_US
            for t in others
        )
        assert all(b - a >= NORMAL_MIN_GAP_US for a, b in itertools.pairwise(others))
    for burst in truth.bursts:
        assert BURST_MIN_SIZE <= len(burst.transaction_ids) <= BURST_MAX_SIZE
        assert 0 < burst.last_time_us - burst.first_time_us <= BURST_MAX_SPAN_US
        burst_times = [time_us(objs[t]["event_time"]) for t in burst.transaction_ids]
        assert burst_times == sorted(burst_times)
        assert (burst_times[0], burst_times[-1]) == (burst.first_time_us, burst.last_time_us)
        assert {objs[t]["account_id"] for t in burst.transaction_ids} == {burst.account_id}
        labelled = {r.transaction_id for r in valid if r.burst_id == burst.burst_id}
        assert labelled == set(burst.transaction_ids)
    assert {r.burst_id for r in valid if r.burst_id} == {b.burst_id for b in truth.bursts}

    # emission order: bursts in event order but one in three shuffled
    position = {r.transaction_id: p for p, r in enumerate(records) if r.kind == "valid"}
    shuffled = sum(
        [position[t] for t in b.transaction_ids] != sorted(position[t] for t in b.transaction_ids)
        for b in truth.bursts
    )
    assert shuffled == len(truth.bursts) // 3

    # late: only non-burst valid records; everything else out of order by at most ~2 s
    late = [r for r in valid if r.late]
    assert truth.late == len(late)
    assert all(r.burst_id is None for r in late)
    assert len(late) == round(sum(r.burst_id is None for r in valid) * config.late_rate)
    running_max = None
    for rec in records:
        if rec.kind != "valid" or rec.late or rec.burst_id or rec.event_time_us is None:
            continue
        if running_max is not None:
            assert rec.event_time_us >= running_max - JITTER_US
        running_max = max(running_max or rec.event_time_us, rec.event_time_us)

    assert GroundTruth.from_json(json.loads(json.dumps(truth.to_json()))) == truth


# --------------------------------------------------------------------------- Luhn


def test_luhn_known_values() -> None:
    assert luhn_valid("79927398713")
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("")
    assert not luhn_valid("0")
    assert not luhn_valid("4111 1111 1111 1111")
    assert not luhn_valid("٤١١١١١١١١١١١١١١١")  # non-ASCII digits
    assert luhn_complete("7992739871") == "79927398713"
    with pytest.raises(ValueError):
        luhn_complete("12a")


@given(st.text(alphabet="0123456789", min_size=1, max_size=20), st.data())
def test_luhn_complete_is_valid_and_single_digit_errors_are_caught(prefix: str, data: st.DataObject) -> None:
    card = luhn_complete(prefix)
    assert card.startswith(prefix) and len(card) == len(prefix) + 1
    assert luhn_valid(card)
    i = data.draw(st.integers(0, len(card) - 1))
    digit = data.draw(st.sampled_from([d for d in "0123456789" if d != card[i]]))
    assert not luhn_valid(card[:i] + digit + card[i + 1 :])


# --------------------------------------------------------------------------- config


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="aware"):
        GeneratorConfig(start=datetime(2026, 11, 24, 10, 0))
    with pytest.raises(ValueError, match="bursts"):
        GeneratorConfig(num_events=20, bursts=10)
    with pytest.raises(ValueError, match="duplicate_rate"):
        GeneratorConfig(duplicate_rate=1.0)
    with pytest.raises(ValueError, match="accounts"):
        GeneratorConfig(accounts=0)


def test_tiny_runs_fit_their_bursts() -> None:
    records, truth = generate(GeneratorConfig(num_events=10, accounts=2))
    assert len(records) == 10
    assert len(truth.bursts) == 2  # default 3, but only 2 accounts
    assert generate(GeneratorConfig(num_events=0))[0] == []


# --------------------------------------------------------------------------- whole runs


def test_same_config_same_output_and_seeds_differ() -> None:
    config = GeneratorConfig(num_events=600, seed=3)
    first, truth1 = generate(config)
    second, truth2 = generate(config)
    assert first == second and truth1 == truth2
    other, _ = generate(GeneratorConfig(num_events=600, seed=4))
    assert [r.payload for r in other] != [r.payload for r in first]
    assert list(iter_payloads(config)) == [r.payload for r in first]


def test_output_does_not_depend_on_hash_seed() -> None:
    code = (
        "import hashlib; from simulator.generator import GeneratorConfig, iter_payloads;"
        "print(hashlib.sha256(b'\\n'.join(iter_payloads(GeneratorConfig(num_events=500)))).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        ).stdout.strip()
        for hash_seed in ("1", "2")
    }
    local = hashlib.sha256(b"\n".join(iter_payloads(GeneratorConfig(num_events=500)))).hexdigest()
    assert digests == {local}


def test_default_run_invariants(default_run: tuple[list[SimRecord], GroundTruth]) -> None:
    records, truth = default_run
    check_invariants(GeneratorConfig(), records, truth)
    kinds = Counter(r.kind for r in records)
    assert kinds["duplicate"] == pytest.approx(0.05 * kinds["valid"], abs=2)
    assert len(truth.bursts) == 15


def test_default_run_looks_realistic(default_run: tuple[list[SimRecord], GroundTruth]) -> None:
    records, _ = default_run
    objs = [json.loads(r.payload) for r in records if r.kind == "valid"]
    n = len(objs)
    numeric = sum(not isinstance(o["amount"], str) for o in objs)
    assert 0.06 * n < numeric < 0.14 * n
    offsets = sum(not o["event_time"].endswith("Z") for o in objs)
    assert 0.05 * n < offsets < 0.30 * n
    brands = Counter(
        "amex"
        if len(o["card_number"]) == 15
        else "long"
        if len(o["card_number"]) == 19
        else "visa"
        if o["card_number"][0] == "4"
        else "mc"
        if "51" <= o["card_number"][:2] <= "55"
        else "other"
        for o in objs
    )
    assert brands["other"] == 0 and brands["visa"] > brands["amex"] > 0 and brands["mc"] > brands["long"] > 0
    assert {o["currency"] for o in objs} == set(CURRENCIES)
    accounts = {o["account_id"] for o in objs}
    assert len(accounts) > 400  # 500 accounts, most of them active


def test_every_malformed_kind_at_1000_events(run_1000: tuple[list[SimRecord], GroundTruth]) -> None:
    records, truth = run_1000
    check_invariants(GeneratorConfig(num_events=1000, seed=7), records, truth)
    assert {r.malformed_kind for r in records if r.kind == "malformed"} == set(MALFORMED_KINDS)
    oversized = [r for r in records if r.malformed_kind == "oversized"]
    assert len(oversized) == 1 and len(oversized[0].payload) > 1_048_576
    naive = next(r for r in records if r.malformed_kind == "naive_timestamp")
    event_time = json.loads(naive.payload)["event_time"]
    assert not event_time.endswith("Z") and not re.search(r"[+-]\d{2}:\d{2}$", event_time)


def test_late_records_arrive_after_later_events(
    default_run: tuple[list[SimRecord], GroundTruth],
) -> None:
    records, truth = default_run
    assert truth.late == 28
    max_seen = 0
    for rec in records:
        if rec.kind != "valid" or rec.event_time_us is None:
            continue
        if rec.late:
            assert max_seen - rec.event_time_us > 3_000_000, "late record is not behind the stream"
        max_seen = max(max_seen, rec.event_time_us)


def test_no_oversized_option() -> None:
    config = GeneratorConfig(num_events=400, include_oversized=False)
    records, truth = generate(config)
    check_invariants(config, records, truth)
    assert max(len(r.payload) for r in records) < 4096


def test_clean_run_has_no_injections_but_bursts() -> None:
    config = GeneratorConfig(num_events=500, duplicate_rate=0, malformed_rate=0, late_rate=0)
    records, truth = generate(config)
    check_invariants(config, records, truth)
    assert {r.kind for r in records} == {"valid"}
    assert truth.late == 0 and len(truth.bursts) == 3


def test_generates_a_large_config() -> None:
    # Its speed is measured by bench/simulator_rate.py (the producer generates as it sends),
    # not asserted here: wall-clock limits fail on a loaded machine.
    records, truth = generate(GeneratorConfig(num_events=50_000, include_oversized=False))
    assert len(records) == 50_000
    assert len({r.transaction_id for r in records if r.kind == "valid"}) == len(truth.valid_transaction_ids)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    num_events=st.integers(50, 400),
    accounts=st.integers(1, 600),
    seed=st.integers(0, 2**32),
    duplicate_rate=st.sampled_from([0.0, 0.05, 0.3]),
    malformed_rate=st.sampled_from([0.0, 0.01, 0.1]),
    late_rate=st.sampled_from([0.0, 0.01, 0.2]),
    include_oversized=st.booleans(),
)
def test_invariants_hold_for_small_configs(
    num_events: int,
    accounts: int,
    seed: int,
    duplicate_rate: float,
    malformed_rate: float,
    late_rate: float,
    include_oversized: bool,
) -> None:
    config = GeneratorConfig(
        num_events=num_events,
        accounts=accounts,
        seed=seed,
        duplicate_rate=duplicate_rate,
        malformed_rate=malformed_rate,
        late_rate=late_rate,
        include_oversized=include_oversized,
    )
    records, truth = generate(config)
    check_invariants(config, records, truth)
    assert generate(config) == (records, truth)


def test_parser_assigns_the_labelled_reasons(run_1000: tuple[list[SimRecord], GroundTruth]) -> None:
    """Contract with ``kernels.parse``: valid records parse, malformed ones get their reason."""
    parse = pytest.importorskip("kernels.parse")
    from schemas.records import SourceRef

    records, _ = run_1000
    now_us = max(r.event_time_us for r in records if r.kind == "valid" and r.event_time_us)
    outcomes: Counter[tuple[str | None, str | None]] = Counter()
    for offset, rec in enumerate(records):
        try:
            parse.parse_payment(rec.payload, SourceRef("sim", 0, offset), now_us)
            got = None
        except parse.ParseError as err:
            got = err.reason
        want = MALFORMED_KINDS[rec.malformed_kind] if rec.malformed_kind else None
        outcomes[(want, got)] += 1
    assert all(want == got for want, got in outcomes), outcomes


# --------------------------------------------------------------------------- CLI


def test_cli_writes_one_line_per_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, truth_path = tmp_path / "events.jsonl", tmp_path / "truth.json"
    argv = ["--num-events", "300", "--seed", "5", "--accounts", "40", "--out", str(out)]
    assert main([*argv, "--truth", str(truth_path), "--no-oversized"]) == 0
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines[:-1]) == 300
    config = GeneratorConfig(num_events=300, seed=5, accounts=40, include_oversized=False)
    records, truth = generate(config)
    assert lines[:-1] == [r.payload for r in records]
    assert GroundTruth.from_json(json.loads(truth_path.read_text())) == truth
    summary = capsys.readouterr().out
    assert summary.count("\n") == 1 and "records=300" in summary and "bursts=3" in summary


def test_cli_as_module_with_oversized(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "simulator.generate", "--num-events", "250", "--out", str(out)],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    assert "malformed=12" in done.stdout
    lines = out.read_bytes().split(b"\n")[:-1]
    assert len(lines) == 250 and max(map(len, lines)) > MAX_PAYLOAD_BYTES


def test_cli_rejects_naive_start(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x"), "--start", "2026-11-24T10:00:00"])
