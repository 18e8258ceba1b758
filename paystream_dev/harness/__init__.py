"""The one harness of the tests and the benches: what they start, watch and stop.

* ``ports``: free TCP ports on 127.0.0.1.
* ``services``: a local ``redis-server`` (``RedisServer``), and the local Kafka broker of
  ``paystream_dev.local_kafka`` (``KafkaBroker``).
* ``processes``: a process tree stopped as a supervisor stops it or killed at once, and
  the RSS of process trees sampled in a thread.
* ``live``: a streaming run of ``python -m beam_pipeline`` on local Flink against the live
  simulator, measured from outside (``LiveRun``, ``run_live``), the run's Prometheus
  counters, a consumer group's committed offsets, percentiles.
* ``wait``: a condition waited for with a deadline (``wait_for``).
* ``leaks``: raw card numbers, emails and phones found in a text.
* ``mutate``: the simulator's payloads damaged as a broken or hostile producer would damage
  them (the bad input of ``tests/test_faults.py``).

Import the module you need (``from paystream_dev.harness.live import LiveRun``): this
package imports none of them, so ``paystream_dev.local_kafka`` can take its free ports from
``ports`` without loading the rest. Tests and benches import the harness, never a bench
module; the product imports none of it.
"""
