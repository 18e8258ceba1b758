"""Sinks: each writes rows of ``schemas.rows`` to one kind of store, idempotently."""
