"""``python -m beam_pipeline [options]``: run the graph (the embedded default without options)."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from typing import List, Optional


def _print_help() -> None:
    import argparse

    from beam_pipeline.options import PaystreamOptions

    parser = argparse.ArgumentParser(
        prog="python -m beam_pipeline",
        description="Run the paystream graph. Without options: the embedded default "
        "(DirectRunner, simulator, DuckDB warehouse in ./paystream-out).",
        epilog="Beam's own flags (--runner, --streaming, --flink_master, ...) pass through to Beam.",
    )
    PaystreamOptions._add_argparse_args(parser)
    parser.print_help()


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "-h" in args or "--help" in args:
        _print_help()
        return 0
    # Beam's runners log set-up chatter at INFO/WARNING; keep the user's terminal for our lines.
    # PAYSTREAM_BEAM_LOG_LEVEL=INFO shows it all, with the output of the runner's Java job
    # server (for a local Flink, the cluster's own log), which Beam passes on at INFO.
    beam_level = logging.getLevelName(os.environ.get("PAYSTREAM_BEAM_LOG_LEVEL", "").upper())
    if not isinstance(beam_level, int):  # unset, or not a level name
        beam_level = None
    logging.basicConfig(level=beam_level or logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("apache_beam").setLevel(beam_level or logging.ERROR)
    # Loading Beam, DuckDB and pyarrow makes a few hundred thousand objects that live for
    # the whole run: with Python's default threshold (700) the collector walked them hundreds
    # of times while they loaded (0.2 CPU s). The run tunes the collector for itself.
    thresholds = gc.get_threshold()
    gc.set_threshold(100_000, thresholds[1], thresholds[2])
    try:
        from beam_pipeline.pipeline import NothingToRead, run
    finally:
        gc.set_threshold(*thresholds)

    # A streaming run ends when it is stopped: SIGTERM (Kubernetes, a supervisor) stops it
    # like Ctrl-C, cancelling the job so the runner's subprocesses are cleaned up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        run(args)
    except KeyboardInterrupt:
        print("paystream: stopped", file=sys.stderr)
        return 130
    except NothingToRead as err:
        print(f"paystream: nothing to read: {err}")
        return 0
    except ValueError as err:
        print(f"paystream: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
