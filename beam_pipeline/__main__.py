"""``python -m beam_pipeline [options]``: run the graph (the embedded default without options)."""

from __future__ import annotations

import logging
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Beam's runners log set-up chatter at INFO/WARNING; keep the user's terminal for our lines.
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    from beam_pipeline.pipeline import run

    try:
        run(sys.argv[1:] if argv is None else argv)
    except ValueError as err:
        print(f"paystream: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
