"""``python -m beam_pipeline.query [--warehouse duckdb:PATH] "SQL"``: query the local warehouse."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from beam_pipeline.options import DEFAULT_WAREHOUSE


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m beam_pipeline.query", description=__doc__)
    parser.add_argument("--warehouse", default=DEFAULT_WAREHOUSE)
    parser.add_argument("sql", nargs="?", default="SELECT * FROM v_dead_letters_by_reason")
    args = parser.parse_args(argv)
    from transforms.sinks.duckdb_warehouse import connect, parse_duckdb_target

    try:
        cursor = connect(parse_duckdb_target(args.warehouse)).cursor()
        result = cursor.execute(args.sql)
    except Exception as err:  # duckdb raises many error classes; report any of them plainly
        print(f"query failed: {err}", file=sys.stderr)
        return 1
    columns = [d[0] for d in result.description or []]
    rows = result.fetchall()
    widths = [max([len(c)] + [len(str(r[i])) for r in rows]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)))
    print(f"({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
