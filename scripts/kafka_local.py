#!/usr/bin/env python3
"""CLI of ``beam_pipeline.local_kafka``: fetch the Java pieces, start/stop a local broker.

python scripts/kafka_local.py fetch
python scripts/kafka_local.py start --dir .cache/broker [--topic payments:4]
python scripts/kafka_local.py stop --dir .cache/broker
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from beam_pipeline.local_kafka import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
