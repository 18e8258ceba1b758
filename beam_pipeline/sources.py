"""Sources: every one yields ``(payload bytes, SourceRef)`` for the drivers' first step."""

from __future__ import annotations

from typing import Iterable, Optional, Tuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems

from kernels.parse import RawPayload
from schemas.records import SourceRef
from simulator.generator import GeneratorConfig, generate

__all__ = ["FileLines", "SimulatedPayloads", "split_lines"]


def split_lines(lines: Iterable[bytes]) -> Iterable[Tuple[int, bytes]]:
    """(line number from 1, line without its end of line); blank lines are not records."""
    for number, line in enumerate(lines, start=1):
        line = line.rstrip(b"\n")
        line = line[:-1] if line.endswith(b"\r") else line
        if line.strip():
            yield number, line


class _ReadLinesFn(beam.DoFn):
    def process(self, readable: fileio.ReadableFile) -> Iterable[RawPayload]:
        topic = f"file:{readable.metadata.path}"
        make = SourceRef._make  # positional, without the keyword handling of SourceRef(...)
        with readable.open(compression_type=fileio.CompressionTypes.AUTO) as handle:
            for number, line in split_lines(handle):
                yield line, make((topic, 0, number, None, None))


class FileLines(beam.PTransform):
    """JSON-lines files (a path or glob, local or on GCS) -> raw payloads with line numbers."""

    def __init__(self, pattern: str, check: bool = True, label: Optional[str] = None) -> None:
        """``check``: the input must match a file now (not for a graph built to run
        elsewhere, whose workers may see other files)."""
        super().__init__(label)
        if not pattern:
            raise ValueError("--source=file needs --input=PATH (a JSON-lines file or a glob)")
        self._pattern = pattern
        if not check:
            return
        try:
            found = FileSystems.match([pattern])[0].metadata_list
        except Exception as err:  # an unreadable location: its own words, in one line
            raise ValueError(f"--input={pattern}: {str(err).splitlines()[0]}") from None
        if not found:
            raise ValueError(
                f"--input={pattern} matches no file: give a JSON-lines file or a glob that exists"
            )

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection[RawPayload]:
        return (
            pbegin
            | "Match"
            >> fileio.MatchFiles(self._pattern, empty_match_treatment=fileio.EmptyMatchTreatment.DISALLOW)
            | "Open" >> fileio.ReadMatches()
            | "Lines" >> beam.ParDo(_ReadLinesFn())
        )


def _simulate(config: GeneratorConfig) -> Iterable[RawPayload]:
    records, _ = generate(config)
    for i, record in enumerate(records):
        yield record.payload, SourceRef(topic="simulator", partition=0, offset=i)


class SimulatedPayloads(beam.PTransform):
    """The simulator's payments, generated inside the pipeline, in emission order.

    Only the generator's config travels in the graph (``beam.Create`` of the
    payloads themselves would pickle and compress them all first: seconds
    per 10,000). The generator is deterministic, so the driver can rebuild
    the ground truth from the same config.
    """

    def __init__(self, config: GeneratorConfig, label: Optional[str] = None) -> None:
        super().__init__(label)
        self._config = config

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection[RawPayload]:
        return pbegin | "Config" >> beam.Create([self._config]) | "Generate" >> beam.FlatMap(_simulate)
