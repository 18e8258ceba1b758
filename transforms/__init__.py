"""The Beam side of paystream: the drivers of the one engine, the public transforms,
the sinks and the metrics. The logic they run lives in ``kernels`` (no Beam).

* For a pipeline of your own, each usable alone: ``masking.MaskPII``,
  ``dedup.DeduplicatePayments``, ``velocity.VelocityAlerts``.
* The engine: ``steps`` (the steps both drivers share), ``batch`` and ``streaming`` (the
  two drivers), ``lists`` (how lists of records travel between steps).
* ``sinks``: the warehouse (DuckDB, BigQuery) and Redis; ``telemetry`` and ``progress``:
  metrics and the progress line.
"""
