"""Write simulated payment messages to a JSON-lines file.

    python -m simulator.generate --num-events 3000 --seed 42 --accounts 500 \\
        --out events.jsonl --truth truth.json

Each line is one raw payload followed by ``\\n`` (payloads never contain a raw
newline; some are deliberately not UTF-8). The ground truth is written as
JSON when ``--truth`` is given. A one-line summary goes to stdout.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from simulator.generator import GeneratorConfig, GroundTruth, SimRecord, generate

__all__ = ["build_parser", "main", "summary"]


def _aware_datetime(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset (e.g. 2026-11-24T10:00:00Z)")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface; defaults are those of ``GeneratorConfig``."""
    d = GeneratorConfig()
    p = argparse.ArgumentParser(prog="python -m simulator.generate", description=__doc__.split("\n")[0])
    p.add_argument("--num-events", type=int, default=d.num_events, help="records to emit, all kinds")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--accounts", type=int, default=d.accounts)
    p.add_argument("--out", type=Path, required=True, help="JSON-lines file to write")
    p.add_argument("--truth", type=Path, help="where to write the ground truth (JSON)")
    p.add_argument("--no-oversized", action="store_true", help="emit no 1 MiB payload")
    p.add_argument("--bursts", type=int, default=None, help="velocity bursts (default: scaled)")
    p.add_argument("--duplicate-rate", type=float, default=d.duplicate_rate)
    p.add_argument("--malformed-rate", type=float, default=d.malformed_rate)
    p.add_argument("--late-rate", type=float, default=d.late_rate)
    p.add_argument(
        "--start",
        type=_aware_datetime,
        default=d.start,
        help="first event time, RFC 3339 with offset",
    )
    return p


def summary(records: Sequence[SimRecord], truth: GroundTruth) -> str:
    """One line: counts by kind, late records and bursts."""
    kinds = Counter(r.kind for r in records)
    sizes = sorted(len(b.transaction_ids) for b in truth.bursts)
    burst_text = f"bursts={len(sizes)}" + (f" ({sizes[0]}-{sizes[-1]} txns)" if sizes else "")
    return (
        f"records={len(records)} valid={kinds['valid']} duplicate={kinds['duplicate']} "
        f"malformed={kinds['malformed']} late={truth.late} {burst_text}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Generate, write ``--out`` (and ``--truth``), print a summary; 0 on success."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = GeneratorConfig(
            num_events=args.num_events,
            accounts=args.accounts,
            seed=args.seed,
            start=args.start,
            duplicate_rate=args.duplicate_rate,
            malformed_rate=args.malformed_rate,
            late_rate=args.late_rate,
            bursts=args.bursts,
            include_oversized=not args.no_oversized,
        )
    except ValueError as exc:
        parser.error(str(exc))
    records, truth = generate(config)
    with args.out.open("wb") as out:
        out.writelines(r.payload + b"\n" for r in records)
    if args.truth is not None:
        args.truth.write_text(json.dumps(truth.to_json(), indent=1) + "\n", encoding="utf-8")
    print(f"{summary(records, truth)} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
