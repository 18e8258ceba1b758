#!/usr/bin/env python3
"""Write dataflow/metadata.json: every paystream pipeline option as a flex template parameter.

python scripts/build_flex_metadata.py           # write
python scripts/build_flex_metadata.py --check   # fail if the committed file is stale
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
OUT = os.path.join(ROOT, "dataflow", "metadata.json")

# Options a Dataflow launch must not take from the template (local-only or meaningless there).
LOCAL_ONLY = {
    "source",
    "input",
    "num_events",
    "sim_seed",
    "sim_accounts",
    "truth",
    "summary",
    "summary_json",
    "metrics_port",
    "flink_metrics_port",
    "metrics_linger_s",
    "kafka_java_worker_address",
    "kafka_expansion_service",
    "kafka_until_end",
    "kafka_max_num_records",
    "kafka_replay_s",
}


def parameters() -> List[Dict[str, Any]]:
    from beam_pipeline.options import PaystreamOptions

    parser = argparse.ArgumentParser()
    PaystreamOptions._add_argparse_args(parser)
    params = []
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        name = action.option_strings[0].lstrip("-")
        if name in LOCAL_ONLY or name.startswith("no_"):
            continue
        param: Dict[str, Any] = {
            "name": name,
            "label": name.replace("_", " ").capitalize(),
            "helpText": (action.help or "").replace("%(default)s", str(action.default)),
            "isOptional": name not in ("warehouse", "kafka_bootstrap_servers", "hmac_key_file"),
        }
        if action.choices:
            param["regexes"] = ["^(" + "|".join(str(c) for c in action.choices) + ")$"]
        params.append(param)
    return params


def metadata() -> str:
    doc = {
        "name": "paystream",
        "description": "Card payments from Kafka: parse, dedup, mask PII, enrich, velocity fraud; "
        "to BigQuery and Redis.",
        "parameters": parameters(),
    }
    return json.dumps(doc, indent=2) + "\n"


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = metadata()
    if args.check:
        with open(OUT, encoding="utf-8") as handle:
            if handle.read() != text:
                print(f"{OUT} is stale: run python scripts/build_flex_metadata.py", file=sys.stderr)
                return 1
        return 0
    with open(OUT, "w", encoding="utf-8") as handle:
        handle.write(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
