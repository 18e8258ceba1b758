"""What a streaming run on Flink is given: defaults, checkpoint directory, restore path.

The runs themselves are in ``tests/test_kafka_e2e.py``; these check the option handling
without starting Flink.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline.runner_setup import (
    FLINK_STREAMING_DEFAULTS,
    NoStreamingRunner,
    flink_streaming_args,
    latest_checkpoint,
    local_flink_conf,
    local_streaming_runner,
    restore_on_local_flink,
)

FLINK = ["--runner=FlinkRunner", "--streaming", "--source=kafka"]


def _flags(args: list[str]) -> dict[str, str]:
    flags: dict[str, str] = {}
    for arg in args:
        if arg.startswith("--"):
            name, _, value = arg[2:].partition("=")
            flags[name] = value
    return flags


def test_batch_and_other_runners_are_left_alone(tmp_path: Path) -> None:
    for argv in (["--runner=FlinkRunner"], ["--streaming"], ["--runner=DirectRunner", "--streaming"]):
        assert flink_streaming_args(argv, str(tmp_path)) == (argv, None)


def test_defaults_fill_in_and_what_the_user_gives_wins(tmp_path: Path) -> None:
    args, resumed = flink_streaming_args([*FLINK, "--checkpointing_interval=60000"], str(tmp_path))
    flags = _flags(args)
    assert resumed is None
    assert flags["checkpointing_interval"] == "60000"
    for name, value in FLINK_STREAMING_DEFAULTS.items():
        if name != "checkpointing_interval":
            assert flags[name] == value
    assert flags["state_backend_storage_path"] == f"file://{tmp_path}"  # the run's scratch
    assert "savepoint_path" not in flags


def _checkpoint(root: Path, job: str, n: int, mtime: float, complete: bool = True) -> Path:
    chk = root / job / f"chk-{n}"
    chk.mkdir(parents=True)
    if complete:
        (chk / "_metadata").write_bytes(b"x")
        os.utime(chk / "_metadata", (mtime, mtime))
    return chk


def test_checkpoint_dir_keeps_checkpoints_and_resumes_from_the_newest(tmp_path: Path) -> None:
    root = tmp_path / "ck"
    args, resumed = flink_streaming_args([*FLINK, f"--checkpoint_dir={root}"], str(tmp_path / "scratch"))
    flags = _flags(args)
    assert resumed is None and "savepoint_path" not in flags  # nothing to resume yet
    assert flags["state_backend_storage_path"] == f"file://{root}"
    assert "externalized_checkpoints_enabled" in flags
    assert "retain_externalized_checkpoints_on_cancellation" in flags

    _checkpoint(root, "job-a", 7, 1_000)
    newest = _checkpoint(root, "job-b", 2, 2_000)
    _checkpoint(root, "job-b", 3, 3_000, complete=False)  # in progress when the job stopped
    assert latest_checkpoint(str(root)) == str(newest)
    args, resumed = flink_streaming_args([*FLINK, f"--checkpoint_dir={root}"], str(tmp_path / "scratch"))
    assert resumed == str(newest)
    assert _flags(args)["savepoint_path"] == f"file://{newest}"


def test_local_flink_gets_the_restore_path_in_its_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_conf = tmp_path / "user-conf"
    user_conf.mkdir()
    (user_conf / "flink-conf.yaml").write_text("taskmanager.numberOfTaskSlots: 4\n")
    monkeypatch.setenv("FLINK_CONF_DIR", str(user_conf))
    restore_on_local_flink(PipelineOptions(FLINK), "/ck/job/chk-3", str(tmp_path / "scratch"))
    conf_dir = os.environ["FLINK_CONF_DIR"]
    assert conf_dir != str(user_conf)
    text = Path(conf_dir, "flink-conf.yaml").read_text()
    assert "taskmanager.numberOfTaskSlots: 4" in text  # the user's settings stay
    assert "execution.savepoint.path: file:///ck/job/chk-3" in text


def test_a_remote_cluster_takes_savepoint_path_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLINK_CONF_DIR", raising=False)
    restore_on_local_flink(
        PipelineOptions([*FLINK, "--flink_master=flink.example:8081"]), "/ck/job/chk-3", str(tmp_path)
    )
    assert "FLINK_CONF_DIR" not in os.environ


def test_a_given_savepoint_path_is_the_one_resumed(tmp_path: Path) -> None:
    for given in (["--savepoint_path=file:///sp/1"], ["--savepoint_path", "file:///sp/1"]):
        _, resumed = flink_streaming_args([*FLINK, *given], str(tmp_path))
        assert resumed == "file:///sp/1"


def test_local_flink_conf_replaces_the_users_value_of_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_conf = tmp_path / "user-conf"
    user_conf.mkdir()
    (user_conf / "flink-conf.yaml").write_text("execution.buffer-timeout: 100 ms\nparallelism.default: 3\n")
    monkeypatch.setenv("FLINK_CONF_DIR", str(user_conf))
    assert local_flink_conf(
        PipelineOptions(FLINK), str(tmp_path / "scratch"), {"execution.buffer-timeout": "10 ms"}
    )
    lines = Path(os.environ["FLINK_CONF_DIR"], "flink-conf.yaml").read_text().splitlines()
    assert lines == ["parallelism.default: 3", "execution.buffer-timeout: 10 ms"]


def test_the_bundle_time_default_uses_the_name_the_flink_runner_reads() -> None:
    """The Java option is maxBundleTimeMills: a Python flag spelled ..._millis reaches the job
    as maxBundleTimeMillis, which no Flink option reads (the runner keeps its 1 s default)."""
    assert "max_bundle_time_mills" in FLINK_STREAMING_DEFAULTS
    assert not any(name.endswith("_millis") for name in FLINK_STREAMING_DEFAULTS)


def test_streaming_kafka_on_the_direct_runner_goes_to_local_flink(monkeypatch: pytest.MonkeyPatch) -> None:
    import paystream_dev.local_kafka as local_kafka

    monkeypatch.setattr(local_kafka, "fetch_beam", lambda: {})
    for runner in ([], ["--runner=DirectRunner"], ["--runner", "DirectRunner"]):
        args, note = local_streaming_runner([*runner, "--streaming", "--source=kafka"])
        assert _flags(args)["runner"] == "FlinkRunner" and "DirectRunner" not in args
        assert note is not None and "local Flink" in note
    for argv in (
        ["--streaming"],
        ["--source=kafka"],
        ["--runner=FlinkRunner", "--streaming", "--source=kafka"],
    ):
        assert local_streaming_runner(argv) == (argv, None)


def test_streaming_kafka_without_local_flink_stops_with_the_flags_to_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import paystream_dev.local_kafka as local_kafka

    def unavailable() -> None:
        raise RuntimeError("mvn dependency:copy failed")

    monkeypatch.setattr(local_kafka, "fetch_beam", unavailable)
    with pytest.raises(NoStreamingRunner) as err:
        local_streaming_runner(["--streaming", "--source=kafka"])
    message = str(err.value)
    assert "--runner=FlinkRunner" in message and "--kafka_until_end" in message and "mvn" in message
