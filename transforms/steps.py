"""The steps both drivers run, written once: parse-and-mask, the account books, the id check.

    raw payloads
      -> ParseAndMask   each payload parsed and checked (``kernels.parse``), each payment
                        masked (``kernels.masking``), in lists by key      -> dead letters
      -> Accounts       each payment decided by its account's book, in the order read:
                        dedup, features, every fraud rule (``kernels.books``) -> alerts,
                                                                              dead letters
      -> Ids            (``dedup_scope="global"``) the rows' transaction ids checked across
                        accounts (``kernels.books.check_ids``)           -> dead letters
      -> rows

``PaymentsDriver`` applies them in that order. A driver says only how its lists are
formed and where its books are kept: the batch driver (``transforms/batch.py``) groups a
bounded input into lists by account; the streaming driver (``transforms/streaming.py``)
keeps the books in keyed state and decides each payment on arrival. Masking happens
before the first grouping, so no raw card number, email or phone crosses a shuffle or
reaches runner state.

``EngineSettings`` holds what both drivers take and its defaults, which are the
options' defaults too (``beam_pipeline/options.py`` reads them from here).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple, Union

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from kernels.books import (
    DEDUP_SCOPES,
    DUPLICATE,
    NEW,
    Pending,
    conflict_letter,
)
from kernels.masking import KeySource, Tokenizer, mask_transaction
from kernels.parse import MAX_FUTURE_SKEW_S, RawPayload, parse_or_dead_letter, payload_size
from kernels.rules import Rule, Rules, as_rules, kind_of
from schemas.records import DeadLetter, EnrichedTransaction, FraudAlert, SourceRef, Transaction
from schemas.rows import ALERTS, DEAD_LETTERS, TRANSACTIONS
from transforms import telemetry
from transforms.progress import bump

__all__ = [
    "ALERTS_TAG",
    "DEAD_LETTER_TAG",
    "DecideCounts",
    "EngineSettings",
    "ParseAndMask",
    "ParseStepFn",
    "PaymentOutputs",
    "PaymentsDriver",
    "id_check_outputs",
    "decided_outputs",
]

DEAD_LETTER_TAG = "dead_letter"
ALERTS_TAG = "alerts"
_US = 1_000_000


class PaymentOutputs(NamedTuple):
    transactions: beam.PCollection[EnrichedTransaction]
    alerts: beam.PCollection[FraudAlert]
    dead_letters: beam.PCollection[DeadLetter]

    def tables(self) -> Dict[str, beam.PCollection[Any]]:
        """The outputs by the table they fill: what every sink takes."""
        return {TRANSACTIONS: self.transactions, ALERTS: self.alerts, DEAD_LETTERS: self.dead_letters}


@dataclass(frozen=True)
class EngineSettings:
    """What both drivers take. The defaults are the options' (``--dedup_horizon_s`` ...)."""

    max_future_skew_s: float = MAX_FUTURE_SKEW_S  # event times further ahead are dead-lettered
    dedup_horizon_s: float = 600.0  # event time for which a transaction id is remembered
    history_ttl_s: float = 7 * 24 * 3600.0  # idle event time after which features restart
    dedup_scope: str = "global"  # global: the id check across accounts; account: none
    # streaming: the keys of the account step, each a stable group of accounts whose books
    # are kept as one ledger (few keys, few state writes per bundle); 0: a key per account
    account_keys: int = 8
    # batch: the lists accounts (and transaction ids) are grouped into, each decided at once
    batch_groups: int = 64

    def __post_init__(self) -> None:
        if self.dedup_scope not in DEDUP_SCOPES:
            raise ValueError(f"dedup_scope must be one of {DEDUP_SCOPES}, not {self.dedup_scope!r}")
        if self.max_future_skew_s < 0:
            raise ValueError("max_future_skew_s must be >= 0")
        if self.dedup_horizon_s <= 0 or self.history_ttl_s <= 0:
            raise ValueError("dedup_horizon_s and history_ttl_s must be > 0")
        if self.account_keys < 0:
            raise ValueError("account_keys must be >= 0 (0: a key per account)")
        if self.batch_groups < 1:
            raise ValueError("batch_groups must be >= 1")

    @classmethod
    def from_options(cls, opts: Any) -> EngineSettings:
        return cls(
            max_future_skew_s=opts.max_future_skew_s,
            dedup_horizon_s=opts.dedup_horizon_s,
            history_ttl_s=opts.history_ttl_s,
            dedup_scope=opts.dedup_scope,
            account_keys=opts.account_keys,
            batch_groups=opts.batch_groups,
        )

    @property
    def horizon_us(self) -> int:
        return int(self.dedup_horizon_s * _US)

    @property
    def history_ttl_us(self) -> int:
        return int(self.history_ttl_s * _US)

    @property
    def id_keys(self) -> int:
        """streaming: the keys of the id check (as many as the account step's; as many as
        the batch groups when that has a key per account)."""
        return self.account_keys or self.batch_groups

    @property
    def global_ids(self) -> bool:
        """Whether the id check runs (``dedup_scope="global"``)."""
        return self.dedup_scope == "global"


# Payloads between updates of the read and valid counters: per bundle, not per payment,
# yet often enough that live metrics move while a large bundle runs.
_COUNT_EVERY = 1000


class ParseAndMask:
    """The body of the first step: a payload in, a ``Pending`` masked payment or a dead
    letter out, counted. ``setup()`` reads the key (on the worker); ``finish()`` adds
    the counts of the bundle to the metrics."""

    def __init__(self, keys: KeySource, max_future_skew_s: float) -> None:
        self._keys = keys
        self._skew_us = int(max_future_skew_s * _US)
        self._tokenizer: Optional[Tokenizer] = None
        self._read = self._valid = 0
        self._sizes: List[int] = []

    def setup(self) -> None:
        self._tokenizer = self._keys.tokenizer()

    def start(self) -> None:
        """A bundle begins: what a failed one counted and did not flush is not counted."""
        self._read = self._valid = 0
        self._sizes = []

    def parse(self, raw: bytes, source: SourceRef, now_us: int) -> Union[Pending, DeadLetter]:
        self._sizes.append(payload_size(raw))
        self._read += 1
        result = parse_or_dead_letter(raw, source, now_us, self._skew_us)
        if type(result) is Transaction:
            self._valid += 1
            masked = mask_transaction(result, self._tokenizer)  # type: ignore[arg-type]
            out: Union[Pending, DeadLetter] = Pending(masked, result.fingerprint)
        else:
            out = result  # type: ignore[assignment]
            telemetry.count("dead_letters", stage="parse", reason=out.reason)  # type: ignore[union-attr]
        if self._read >= _COUNT_EVERY:
            self._flush_counts()
        return out

    def parse_all(self, payloads: Iterable[RawPayload]) -> Iterator[Union[Pending, DeadLetter]]:
        now_us = int(time.time() * _US)
        parse = self.parse
        for raw, source in payloads:
            yield parse(raw, source, now_us)

    def _flush_counts(self) -> None:
        if self._read:
            telemetry.count("payments_in", self._read)
            bump("read", self._read)
        if self._valid:
            telemetry.count("payments_valid", self._valid)
        telemetry.observe_many("payload_bytes", self._sizes)
        self._read = self._valid = 0
        self._sizes = []

    def finish(self) -> None:
        """The counts of the bundle to the metrics (call at its end)."""
        self._flush_counts()


class ParseStepFn(beam.DoFn):
    """The base of both drivers' first DoFn: the ``ParseAndMask`` body, made ready at
    setup, and how many groups the payments are keyed into."""

    def __init__(self, keys: KeySource, max_future_skew_s: float, groups: int) -> None:
        self._body = ParseAndMask(keys, max_future_skew_s)
        self._groups = groups

    def setup(self) -> None:
        self._body.setup()

    def start_bundle(self) -> None:
        self._body.start()

    def finish_bundle(self) -> Any:
        self._body.finish()


class DecideCounts:
    """The counters of the payments a step's books decided, added at ``flush()``."""

    __slots__ = ("new", "duplicates", "conflicts", "alerts")

    def __init__(self) -> None:
        self.new = self.duplicates = self.conflicts = 0
        self.alerts: Dict[str, int] = {}  # by rule kind

    def flush(self) -> None:
        if self.new:
            telemetry.count("payments_unique", self.new)
            telemetry.count("payments_enriched", self.new)
        if self.duplicates:
            telemetry.count("duplicates_dropped", self.duplicates)
        if self.conflicts:
            telemetry.count("dead_letters", self.conflicts, stage="dedup", reason="conflicting_duplicate")
        for kind, n in self.alerts.items():
            telemetry.count("fraud_alerts", n, rule=kind)
        self.__init__()  # type: ignore[misc]


def decided_outputs(decided: Iterable[Tuple[str, Any, Any, Any]], counts: DecideCounts) -> Iterator[Any]:
    """The body of the account step, over the books' verdicts (``decide_each`` or
    ``decide_in_order``): each new payment's row, then its alerts (tagged
    ``ALERTS_TAG``); a conflict's dead letter (tagged); counted in ``counts``."""
    alerts_by_kind = counts.alerts
    for verdict, txn, row, alerts in decided:
        if verdict is NEW:
            counts.new += 1
            yield row
            for alert in alerts:
                kind = kind_of(alert)
                alerts_by_kind[kind] = alerts_by_kind.get(kind, 0) + 1
                yield TaggedOutput(ALERTS_TAG, alert)
        elif verdict is DUPLICATE:
            counts.duplicates += 1
        else:
            counts.conflicts += 1
            yield TaggedOutput(DEAD_LETTER_TAG, conflict_letter(txn, " on this account"))


def id_check_outputs(
    kept: List[EnrichedTransaction], again: int, conflicts: List[Tuple[EnrichedTransaction, str]]
) -> Iterator[Any]:
    """The body of the id check, over ``kernels.books.check_ids``'s verdicts: the rows to
    store, then a dead letter (tagged) for each row whose transaction id was stored with
    other content (for another account, or for this one); counted."""
    yield from kept
    for row, where in conflicts:
        yield TaggedOutput(DEAD_LETTER_TAG, conflict_letter(row.txn, where))
    counts = DecideCounts()
    counts.duplicates, counts.conflicts = again, len(conflicts)
    counts.flush()


class PaymentsDriver(beam.PTransform):
    """Raw payloads -> ``PaymentOutputs`` (rows, alerts, dead letters) through the three
    steps. A driver gives each step as a transform (``parse_step``, ``accounts_step``,
    ``ids_step``); their outputs are tagged as above, rows on the main output.

    ``rules``: one rule or several (``kernels/rules.py``); ``keys``: where the token key
    comes from (``kernels.masking.KeySource``); ``settings``: ``EngineSettings``.
    """

    def __init__(
        self,
        rules: Union[Rule, Rules],
        keys: KeySource,
        settings: EngineSettings = EngineSettings(),
        label: Optional[str] = None,
    ) -> None:
        super().__init__(label)
        self._rules = as_rules(rules)
        self._keys = keys
        self._settings = settings

    def parse_step(self) -> beam.PTransform:
        raise NotImplementedError

    def accounts_step(self) -> beam.PTransform:
        raise NotImplementedError

    def ids_step(self) -> beam.PTransform:
        raise NotImplementedError

    def list_type(self) -> Any:
        """The element type of the lists between the steps, when the driver sets it (the
        coder they travel with)."""
        return None

    def expand(self, raw: beam.PCollection[RawPayload]) -> PaymentOutputs:  # type: ignore[override]
        parsed = raw | "ParseAndMask" >> self.parse_step()
        lists = self.list_type()
        if lists is not None:
            parsed.masked.element_type = lists
        decided = parsed.masked | "Accounts" >> self.accounts_step()
        dead = [parsed[DEAD_LETTER_TAG], decided[DEAD_LETTER_TAG]]
        rows = decided.transactions
        if self._settings.global_ids:
            if lists is not None:
                rows.element_type = lists
            checked = rows | "Ids" >> self.ids_step()
            dead.append(checked[DEAD_LETTER_TAG])
            rows = checked.stored
        return PaymentOutputs(
            transactions=rows,
            alerts=decided[ALERTS_TAG],
            dead_letters=tuple(dead) | "DeadLetters" >> beam.Flatten(),
        )
