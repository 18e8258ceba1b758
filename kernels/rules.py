"""The rule seam: a fraud rule is a per-account kernel with its parameters and its alerts.

Every payment an account's book decides as new (``kernels.books.AccountBook``)
goes to each configured rule, in the order read, with the rule's own state of that
account::

    alert = rule.observe(state, payment, clock_us)     # a FraudAlert or None

A rule (``Rule``) gives:

* ``kind``: what the alerts table's ``rule`` column starts with (``velocity``), and
  ``name``: that column's value, the kind with its parameters (``velocity:3 in 60s/5s``);
* ``params()``: its parameters, the ``rule_params`` column (JSON);
* ``new_state()``, ``observe(...)``, ``prune(...)``, ``keep_us()``: a fresh state, one
  payment, forgetting what can no longer matter, and how long after the account's clock
  the state can still change a decision (the book is dropped after the longest of them,
  the dedup horizon and the feature history);
* ``from_options(opts)`` and ``add_options(parser)``: its command-line flags.

Both drivers (``transforms/batch.py``, ``transforms/streaming.py``) run the same books
in the same order, so every rule gives the same alerts in a batch and a streaming run,
and the same alert ids in a replay. Alerts of every rule go to one table,
``fraud_alerts``, and to the Redis stream.

Adding a rule: a module with a class like ``kernels.card_testing.CardTestingRule``, its
tests, and one line in ``RULES`` (``docs/architecture.md``, "Adding a rule").
``--rules`` chooses the rules of a run (default: velocity).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from typing import Any, Dict, Iterable, Optional, Protocol, Tuple, Union

from schemas.records import FraudAlert, MaskedTransaction

__all__ = [
    "DEFAULT_RULES",
    "RULES",
    "Rule",
    "Rules",
    "add_rule_options",
    "alert_id",
    "as_rules",
    "kind_of",
    "rule_class",
    "rule_params_json",
    "rules_from_options",
]

# kind -> "module:class" of the rule, imported when a run or the options ask for it
RULES: Dict[str, str] = {
    "velocity": "kernels.velocity:VelocityRule",
    "card_testing": "kernels.card_testing:CardTestingRule",
}
DEFAULT_RULES = "velocity"


class Rule(Protocol):
    kind: str

    @property
    def name(self) -> str: ...

    def params(self) -> Dict[str, Any]: ...

    def new_state(self) -> Any: ...

    def observe(self, state: Any, txn: MaskedTransaction, clock_us: int) -> Optional[FraudAlert]:
        """This payment counted into the account's ``state``; the alert it raises, if any.
        ``clock_us``: the latest event time the account had seen before it."""
        ...

    def keep_us(self) -> int: ...

    def prune(self, state: Any, clock_us: int) -> None:
        """Forget what can no longer change a decision, for an account at ``clock_us``."""
        ...


def kind_of(alert: FraudAlert) -> str:
    """The kind of the rule that raised ``alert`` (its ``rule`` is the kind, then ``:``)."""
    return alert.rule.split(":", 1)[0]


class Rules(Tuple[Rule, ...]):
    """The rules of a run, in the order they are applied (and their alerts emitted)."""

    def keep_us(self) -> int:
        return max((rule.keep_us() for rule in self), default=0)


def as_rules(rules: Union[Rule, Iterable[Rule]]) -> Rules:
    """``rules`` as ``Rules``: one rule is a set of one."""
    if type(rules) is Rules:
        return rules  # type: ignore[return-value]
    if isinstance(rules, (tuple, list)):
        return Rules(tuple(rules))
    return Rules((rules,))  # type: ignore[arg-type]  # one rule (no Protocol isinstance: it costs µs)


def rule_class(kind: str) -> Any:
    if kind not in RULES:
        raise ValueError(f"unknown rule {kind!r}; known: {', '.join(sorted(RULES))}")
    module, name = RULES[kind].split(":")
    return getattr(importlib.import_module(module), name)


def add_rule_options(parser: Any) -> None:
    """Every registered rule's own flags (``add_options``), in a group of its own."""
    for kind in RULES:
        cls = rule_class(kind)
        add = getattr(cls, "add_options", None)
        if add is not None:
            add(parser.add_argument_group(f"rule {kind}"))


def rules_from_options(opts: Any) -> Rules:
    """``--rules`` (comma-separated kinds) as the rules of a run, each from its flags."""
    kinds = [k.strip() for k in (getattr(opts, "rules", None) or DEFAULT_RULES).split(",") if k.strip()]
    if not kinds:
        raise ValueError("--rules needs at least one rule")
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"--rules names a rule twice: {','.join(kinds)}")
    return Rules(tuple(rule_class(kind).from_options(opts) for kind in kinds))


def rule_params_json(params: Dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def alert_id(*parts: Any) -> str:
    """An alert's id from what names its burst (account, rule, start, ...): a replay of
    the same payments gives the same id, which the sinks write once."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:32]
