"""Payments reach the Python steps by time (``data_buffer_time_limit_ms``), and the Python
SDK's time-based output flush never cuts an element in two (``element_safe_time_flush``).

Without the fix, the SDK's flush thread can send the first half of an element in one
message and the rest in the next; the Java runner then fails the bundle with an
``EOFException`` and the job restarts in a loop. The live runs that use the experiment are
in ``tests/test_live.py``; this checks the fix on the SDK's own stream.
"""

from __future__ import annotations

import time
from typing import Any, List

from apache_beam.runners.worker import bundle_processor
from apache_beam.runners.worker.data_plane import TimeBasedBufferingClosableOutputStream

from beam_pipeline.runner_setup import data_time_limit_ms, element_safe_time_flush

_ELEMENT = b"<" + b"x" * 30 + b">"


class _SlowCoder:
    """Writes an element in two pieces with a pause between them, as a nested coder may."""

    def encode_to_stream(self, value: Any, stream: Any, nested: bool) -> None:
        stream.write(_ELEMENT[:10])
        time.sleep(0.003)
        stream.write(_ELEMENT[10:])


class _Op:
    def __init__(self, stream: Any) -> None:
        self.output_stream = stream
        self.windowed_coder_impl = _SlowCoder()


def _chunks(process: Any, elements: int = 30) -> List[bytes]:
    chunks: List[bytes] = []
    stream = TimeBasedBufferingClosableOutputStream(
        close_callback=chunks.append, flush_callback=chunks.append, time_flush_threshold_ms=1
    )
    op = _Op(stream)
    for _ in range(elements):
        process(op, None)
    stream.close()
    return [c for c in chunks if c]


def _whole(chunk: bytes) -> bool:
    return len(chunk) % len(_ELEMENT) == 0 and chunk == _ELEMENT * (len(chunk) // len(_ELEMENT))


def test_the_sdks_own_time_flush_cuts_elements() -> None:
    """What the fix is for: Beam's process() lets the flush thread send half an element."""
    original = bundle_processor.DataOutputOperation.process
    if getattr(original, "paystream_element_safe", False):  # patched earlier in this process
        original = original.__wrapped_beam__  # type: ignore[attr-defined]
    chunks = _chunks(original)
    assert b"".join(chunks) == _ELEMENT * 30
    assert not all(_whole(c) for c in chunks)


def test_with_the_fix_every_flush_holds_whole_elements() -> None:
    element_safe_time_flush()
    element_safe_time_flush()  # once is enough; twice changes nothing
    chunks = _chunks(bundle_processor.DataOutputOperation.process)
    assert b"".join(chunks) == _ELEMENT * 30
    assert len(chunks) > 3  # still flushed by time, not only at the end
    assert all(_whole(c) for c in chunks)


def test_the_time_limit_is_read_from_the_experiments() -> None:
    from apache_beam.options.pipeline_options import PipelineOptions

    assert data_time_limit_ms(PipelineOptions(["--experiments=data_buffer_time_limit_ms=7"])) == 7
    assert data_time_limit_ms(PipelineOptions(["--experiments=other"])) == 0
