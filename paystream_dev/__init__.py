"""Development tooling: what a laptop, the tests and the image build need, not the product.

* ``local_kafka``: Java artifacts fetched with Maven into the project's cache, a local KRaft
  broker, the Java worker pool process, an expansion service for ``ReadFromKafka``.
* ``java_workers``: the Java worker pool server itself (the Kubernetes ``java-worker``
  sidecar runs it too).
* ``local_java``: the provider the pipeline finds through the ``paystream.local_java``
  entry point (``beam_pipeline.java_provider``) when a run on this machine needs a job server
  jar or an expansion service and none was given.
* ``harness``: what the tests and the benches share: free ports, a local ``redis-server``
  beside the broker, process trees stopped and their RSS sampled, and the live run of a
  streaming pipeline against the live simulator.

One command line for all of it: ``python -m paystream_dev --help``. The product
(``beam_pipeline``, ``transforms``, ``schemas``, ``simulator``) imports none of this package;
``tests/test_layers.py`` checks that.
"""
