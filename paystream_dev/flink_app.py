"""The pipeline as a Flink application: its jar and the jars it needs, as the image holds them.

    python -m paystream_dev flink app-jar --options k8s-flink/image/pipeline-options.txt --out DIR \\
        [--set --kafka_bootstrap_servers=HOST:PORT ...]

The image runs exactly this command (``k8s-flink/image/Dockerfile``, ``--out
/opt/flink/usrlib``), and the local application cluster of ``tests/test_flink_cluster.py``
runs its result, with only the addresses of a machine changed (``--set``).

* ``paystream-pipeline.jar``: ``python -m beam_pipeline OPTIONS --output_executable_path``.
  The graph is built and expanded here (KafkaIO by the Flink runner's own Beam Java
  version, ``use_deprecated_read``: Flink's own Kafka source, EMBEDDED in the TaskManager
  JVM, no Java worker), with the options baked in; the JobManager starts it with
  ``org.apache.beam.runners.flink.FlinkPipelineRunner``.
* The Beam jars it runs on: the jar Beam writes holds only the job server jar's own classes
  (ours is a classpath jar), so every jar of the job server's classpath that Flink's own
  ``lib/`` does not provide goes beside it. Flink loads ``usrlib/`` into the job's class
  loader.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from paystream_dev.local_kafka import FLINK_DIR, fetch_beam

__all__ = ["APP_JAR", "OPTIONS_FILE", "build", "read_options", "usrlib_jars"]

APP_JAR = "paystream-pipeline.jar"
OPTIONS_FILE = Path(__file__).resolve().parent.parent / "k8s-flink" / "image" / "pipeline-options.txt"

# Jars of the job server's classpath that Flink's distribution provides itself (flink-dist
# has Flink, RocksDB and their logging); Flink loads these classes parent-first anyway.
_PROVIDED_BY_FLINK = ("flink-", "frocksdbjni-", "slf4j-")


def read_options(path: Path = OPTIONS_FILE) -> List[str]:
    """The options of an options file: one per line, ``#`` comments."""
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip() and not line.lstrip().startswith("#")]


def _key(flag: str) -> str:
    return flag.split("=", 1)[0]


def with_changes(options: Sequence[str], changes: Sequence[str]) -> List[str]:
    """``options`` with each of ``changes`` (``--key=value``) in place of the option of the
    same key, or added; ``--no-KEY`` drops ``--KEY``."""
    out = list(options)
    for change in changes:
        if change.startswith("--no-"):
            out = [o for o in out if _key(o) != f"--{change[5:]}"]
            continue
        keys = [_key(o) for o in out]
        if _key(change) in keys:
            out[keys.index(_key(change))] = change
        else:
            out.append(change)
    return out


def usrlib_jars() -> List[Path]:
    """The Beam jars an application jar needs beside it."""
    fetch_beam()
    return sorted(j for j in (FLINK_DIR / "lib").glob("*.jar") if not j.name.startswith(_PROVIDED_BY_FLINK))


def build(out: Path, options: Sequence[str], log: Optional[Path] = None) -> Path:
    """``out`` as the image's ``usrlib/``: the application jar, with ``options`` baked in,
    and the jars it needs. Returns the application jar."""
    out.mkdir(parents=True, exist_ok=True)
    jar = out / APP_JAR
    cmd = [sys.executable, "-m", "beam_pipeline", *options, f"--output_executable_path={jar}"]
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    if log is None:
        subprocess.run(cmd, check=True)
    else:
        with open(log, "w", encoding="utf-8") as handle:
            done = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise RuntimeError(f"building {jar} failed (rc={done.returncode}); see {log}")
    for source in usrlib_jars():
        shutil.copy2(source, out / source.name)
    return jar


def baked_options(jar: Path) -> Dict[str, object]:
    """The pipeline options an application jar carries, by name (Beam writes them beside
    the pipeline, ``BEAM-PIPELINE/<name>/pipeline-options.json``)."""
    import json
    import zipfile

    with zipfile.ZipFile(jar) as archive:
        names = [n for n in archive.namelist() if n.endswith("pipeline-options.json")]
        if len(names) != 1:
            raise ValueError(f"{jar} carries {len(names)} pipeline option files")
        data = json.loads(archive.read(names[0]))
    # urns: "beam:option:max_parallelism:v1"
    return {key.split(":")[2]: value for key, value in data.items() if key.startswith("beam:option:")}
