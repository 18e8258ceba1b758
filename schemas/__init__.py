"""paystream schemas: the one source of truth for every record and table shape.

* ``payment.schema.json``: JSON Schema (draft 2020-12) of the Kafka message value.
* ``records.py``: the typed records that flow through the Beam graph (re-exported here).
* ``bigquery/*.json``: the warehouse tables' columns. ``schemas.tables`` loads them and derives
  the Beam ``{"fields": [...]}`` schema, the DuckDB DDL and the BigQuery DDL of ``schema.sql``,
  which also holds the analysis views (one SELECT text for BigQuery and DuckDB).
* ``schemas.rows``: records → JSON-able warehouse rows.

``tests/test_schemas.py`` checks that all of these agree. The submodules ``tables`` and ``rows``
are not imported here, so ``python -m schemas.tables`` runs cleanly.
"""

from .records import DeadLetter, EnrichedTransaction, FraudAlert, MaskedTransaction, SourceRef, Transaction

__all__ = [
    "SourceRef",
    "Transaction",
    "MaskedTransaction",
    "EnrichedTransaction",
    "FraudAlert",
    "DeadLetter",
]
