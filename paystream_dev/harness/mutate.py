"""Mutated payloads: what a broken or hostile producer puts on the topic.

``mutated(config, mutate_share, seed)`` takes the simulator's payloads
(``generator.generate``) and damages a share of them, one mutation each, drawn from
``MUTATIONS``: bytes flipped, cut short, fields of the wrong type, duplicate keys,
bad UTF-8, edge amounts, nesting deep enough to break a recursive parser, card
numbers where no card number belongs, and values that are empty, null (a Kafka
tombstone), blank or over the size limit. Each comes with the raw PII of the
payment it was made from, so a test can look for it in every sink and log.

The pipeline must neither crash nor drop any of them silently: each is stored,
dropped as a duplicate, or dead-lettered with a reason (``tests/test_faults.py``).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional

from simulator.generator import MAX_PAYLOAD_BYTES, GeneratorConfig, generate
from simulator.producer import record_timestamp_ms

__all__ = ["MUTATIONS", "Mutated", "mutated"]


@dataclass(frozen=True)
class Mutated:
    """One payload for the topic (``None``: a null value), what was done to it, and the
    raw PII (card number, email, phone) of the payment it came from."""

    payload: Optional[bytes]
    mutation: str  # "none" for a payload left as the simulator made it
    key: Optional[bytes]
    timestamp_ms: Optional[int]  # the record's: the payment's event time, as the simulator sends it
    card_number: Optional[str] = None
    email: Optional[str] = None
    phone: Optional[str] = None


def _flip(rng: random.Random, raw: bytes, obj: Dict[str, Any]) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 5)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def _truncate(rng: random.Random, raw: bytes, obj: Dict[str, Any]) -> bytes:
    return raw[: rng.randrange(len(raw))]


_WRONG_VALUES: List[Any] = [None, True, 0, -1, 1.5, [], {}, ["a"], {"x": 1}, "", " ", "null", 10**40]


def _wrong_type(rng: random.Random, raw: bytes, obj: Dict[str, Any]) -> bytes:
    out = dict(obj)
    name = rng.choice(sorted(out))
    out[name] = rng.choice(_WRONG_VALUES)
    return json.dumps(out).encode()


def _duplicate_key(rng: random.Random, raw: bytes, obj: Dict[str, Any]) -> bytes:
    name = rng.choice(sorted(obj))
    other = json.dumps(rng.choice(_WRONG_VALUES + ["txn-other", obj[name]]))
    text = json.dumps(obj)
    return (text[:-1] + f', "{name}": {other}' + "}").encode()


_BAD_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xc0\xaf"]


def _bad_utf8(rng: random.Random, raw: bytes, obj: Dict[str, Any]) -> bytes:
    at = raw.find(b'"', rng.randrange(len(raw)))
    at = at + 1 if at >= 0 else len(raw) // 2
    return raw[:at] + rng.choice(_BAD_UTF8) + raw[at:]


_EDGE_AMOUNTS: List[Any] = [
    0,
    "0",
    "0.00",
    "-0.01",
    -5,
    "0.001",
    "1e3",
    1e308,
    "NaN",
    "Infinity",
    "-Infinity",
    10**30,
    "99999999999999999999.99",
    " 5.00 ",
    "5,00",
    "0x10",
    "\u0665.00",  # an Arabic-Indic digit
    0.1 + 0.2,
    "1_000.00",
]


def _edge_amount(rng: random.Random, raw: bytes, obj: Dict[str, Any]) -> bytes:
    return json.dumps({**obj, "amount": rng.choice(_EDGE_AMOUNTS)}).encode()


def _deep(rng: random.Random, raw: bytes, obj: Dict[str, Any]) -> bytes:
    depth = rng.choice([1_000, 20_000, 200_000])
    inner = json.dumps(obj)
    return ('{"nested": ' * depth + inner + "}" * depth).encode()


def _card_elsewhere(rng: random.Random, raw: bytes, obj: Dict[str, Any]) -> bytes:
    if not isinstance(obj.get("card_number"), str) or not obj["card_number"]:
        return _flip(rng, raw, obj)  # a malformed payload with no card number to move
    name = rng.choice(["merchant_id", "account_id", "transaction_id", "currency", "note"])
    spaced = " ".join(obj["card_number"][i : i + 4] for i in range(0, len(obj["card_number"]), 4))
    return json.dumps(
        {**obj, name: rng.choice([obj["card_number"], spaced, f"card {obj['card_number']}"])}
    ).encode()


def _empty(rng: random.Random, raw: bytes, obj: Dict[str, Any]) -> Optional[bytes]:
    return rng.choice([b"", None, b" ", b"\n\t ", b"{}", b"[]", b"null", b"\x00"])


def _oversized(rng: random.Random, raw: bytes, obj: Dict[str, Any]) -> bytes:
    pad = MAX_PAYLOAD_BYTES + rng.randint(1, MAX_PAYLOAD_BYTES)
    return json.dumps({**obj, "padding": "x" * pad}).encode()


MUTATIONS: Dict[str, Callable[[random.Random, bytes, Dict[str, Any]], Optional[bytes]]] = {
    "flip": _flip,
    "truncate": _truncate,
    "wrong_type": _wrong_type,
    "duplicate_key": _duplicate_key,
    "bad_utf8": _bad_utf8,
    "edge_amount": _edge_amount,
    "deep": _deep,
    "card_elsewhere": _card_elsewhere,
    "empty": _empty,
    "oversized": _oversized,
}
# each mutation's weight among the mutated payloads; oversized ones are rare (a megabyte each)
_WEIGHTS = {"deep": 0.2, "oversized": 0.002}


def mutated(config: GeneratorConfig, mutate_share: float = 0.5, seed: int = 0) -> Iterator[Mutated]:
    """The payloads of ``generate(config)``, ``mutate_share`` of them mutated."""
    if not 0.0 <= mutate_share <= 1.0:
        raise ValueError("mutate_share must be in [0, 1]")
    rng = random.Random(seed)
    names = sorted(MUTATIONS)
    weights = [_WEIGHTS.get(name, 1.0) for name in names]
    records, _ = generate(config)
    now_ms = int(time.time() * 1000)
    for rec in records:
        try:
            obj = json.loads(rec.payload)
        except ValueError:
            obj = None
        pii: Dict[str, Optional[str]] = {}
        if isinstance(obj, dict):
            pii = {k: v for k in ("card_number", "email", "phone") if isinstance(v := obj.get(k), str)}
        key = rec.account_id.encode() if rec.account_id else None
        ts = record_timestamp_ms(rec.event_time_us, now_ms)
        if not isinstance(obj, dict) or rng.random() >= mutate_share:
            yield Mutated(rec.payload, "none", key, ts, **pii)
            continue
        name = rng.choices(names, weights)[0]
        yield Mutated(MUTATIONS[name](rng, rec.payload, obj), name, key, ts, **pii)
