"""The production path, run for real: a Flink cluster from PyPI, its faults and its rescaling.

Every test here runs paystream on a real Flink 1.19.3 cluster (``paystream_dev.flink_cluster``:
a JobManager and TaskManager JVMs on 127.0.0.1, configured from
``k8s-flink/base/flinkdeployment.yaml``), with the Python steps in the worker pool the
TaskManagers' sidecar runs (``python -m beam_pipeline.worker``, an EXTERNAL environment),
against a real KRaft broker, a real redis-server and the live simulator. Each run is
checked whole against the simulator's ground truth: every valid payment stored once,
every malformed one dead-lettered with its reason, every burst alerted exactly once, and
no other alert.

1. Session cluster, two TaskManagers: ``kill -9`` of the TaskManager running the job.
2. Application cluster in reactive mode, the image's layout (``usrlib/``, the jar built
   by the image's own command from ``k8s-flink/image/pipeline-options.txt``): one
   TaskManager, a second added, then one stopped, under load.
3. Session cluster: the worker pool killed and started again.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import psutil
import pytest
import yaml

from paystream_dev.flink_app import APP_JAR, OPTIONS_FILE, baked_options, build, read_options, with_changes
from paystream_dev.flink_cluster import (
    APPLICATION_ENTRY_CLASS,
    DEPLOYMENT,
    FLINK_DIST_VERSION,
    LOCAL_CHANGES,
    FlinkCluster,
    cluster_conf,
    deployment_conf,
)
from paystream_dev.harness.browser import headless_chromium
from paystream_dev.harness.live import LiveResult, LiveRun, Phase
from paystream_dev.harness.processes import tree
from paystream_dev.harness.services import KafkaBroker, RedisServer, WorkerPool
from paystream_dev.harness.wait import wait_for
from simulator.live import LiveConfig

ROOT = Path(__file__).resolve().parent.parent
# A run on a session cluster ships the job server's classpath (about 230 MB) with its job,
# before the first payment is read.
WARM_UP_S = 480.0


@pytest.fixture(scope="module")
def broker() -> Iterator[KafkaBroker]:
    with KafkaBroker() as b:
        yield b


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A Redis of the test's own: each run's alert stream is checked whole."""
    with RedisServer() as server:
        yield server


def _assert_exact(res: LiveResult) -> None:
    truth, exact = res.truth, res.exact
    assert truth is not None and len(truth.bursts) >= 5 and sum(truth.malformed.values()) > 0, exact
    assert exact["rows"] == exact["valid"] == len(truth.valid_transaction_ids), exact
    assert exact["rows_missing"] == exact["rows_extra"] == exact["rows_twice"] == 0, exact
    assert exact["dead_letters"] == truth.malformed, exact
    assert exact["redis_alerted_once"] == exact["warehouse_alerted_once"] == len(truth.bursts), exact
    assert exact["redis_false"] == exact["warehouse_false"] == 0, exact
    assert exact["ok"]


def _restored(cluster: FlinkCluster, job_id: str) -> Dict[str, Any]:
    """The checkpoint the job last restored (empty: none)."""
    latest = cluster.rest(f"/jobs/{job_id}/checkpoints")["latest"]
    return dict(latest.get("restored") or {})


def _live_run(
    broker: KafkaBroker, redis_url: str, workdir: Path, seed: int, pool: WorkerPool, args: List[str]
) -> LiveRun:
    return LiveRun(
        broker,
        redis_url,
        str(workdir),
        args,
        seed=seed,
        warmup_rate=200,
        live=LiveConfig(seed=seed, burst_every=40),
        verbose=True,
        group=f"cluster-{seed}",
        metrics_port=pool.metrics_port,
    )


def _session_args(cluster: FlinkCluster, pool: WorkerPool) -> List[str]:
    """The run as the README gives it for a cluster."""
    return [
        f"--flink_master={cluster.address}",
        "--environment_type=EXTERNAL",
        f"--environment_config={pool.address}",
        "--parallelism=2",
        "--checkpointing_interval=5000",
    ]


def _recovered(
    cluster: FlinkCluster, job_id: str, t0: float, timeout_s: float = 180.0
) -> Tuple[float, Dict[str, Any]]:
    """Wait until the job has restored a checkpoint and runs every task again; the seconds
    since ``t0`` (the fault, monotonic), and the checkpoint."""
    restored = wait_for("the job to restore a checkpoint", lambda: _restored(cluster, job_id), timeout_s)
    wait_for("every task of the job running again", lambda: cluster.job_running(job_id), timeout_s)
    return time.monotonic() - t0, restored


def _screenshot(url: str, path: str) -> None:
    browser = headless_chromium(1500, 900)
    try:
        browser.get(url)
        wait_for("the job graph drawn", lambda: browser.find_elements("css selector", "svg g.node"), 60)
        time.sleep(3)  # the graph's layout settles
        assert browser.save_screenshot(path)
    finally:
        browser.quit()


def _finish(run: LiveRun, pool: WorkerPool) -> LiveResult:
    """Drain; stop the run (which cancels its job on the cluster) and the worker pool
    (which holds the warehouse open); check."""
    run.drain()
    if run.proc is not None:
        # SIGTERM, as a supervisor stops it: the run stops its job server and expansion
        # service JVMs itself, none is left running once it has exited
        children = tree(run.proc.pid)[1:]
        assert any("java" in p.name() for p in children)
        run.proc.terminate()
        assert run.proc.wait(timeout=120) == 130, run.log_text(last=True)[-3000:]
        left = [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not left, [p.cmdline()[:4] for p in left]
        assert run.stop() == 130
    pool.stop()
    return run.finish()


@contextlib.contextmanager
def _session_run(
    broker: KafkaBroker, redis_url: str, tmp_path: Path, seed: int, taskmanagers: int
) -> Iterator[Tuple[FlinkCluster, WorkerPool, LiveRun, Dict[str, Any]]]:
    """A session cluster, the worker pool, and a live run on them, warmed up with its job
    running; the run is aborted if the block fails."""
    with (
        FlinkCluster(tmp_path / "flink").start(taskmanagers=taskmanagers) as cluster,
        WorkerPool(str(tmp_path / "worker.log")) as pool,
    ):
        run = _live_run(broker, redis_url, tmp_path, seed, pool, _session_args(cluster, pool))
        try:
            run.start()
            run.warm_up(timeout_s=WARM_UP_S)
            job = wait_for("the job on the cluster", cluster.running_job, 60)
            yield cluster, pool, run, job
        except BaseException:
            run.abort()
            raise


def test_a_taskmanager_killed_mid_stream_the_job_restores_and_the_result_is_exact(
    broker: KafkaBroker, redis_server: RedisServer, tmp_path: Path
) -> None:
    with _session_run(broker, redis_server.url, tmp_path, 71, taskmanagers=2) as (cluster, pool, run, job):
        assert job["name"].startswith("paystream-")
        run.phase(Phase(200, 15))
        victim = cluster.taskmanager_of(job["jid"])[0]
        killed_at = time.monotonic()
        cluster.kill_taskmanager(victim)
        run.lag_from_offsets = True
        print(f"  killed {victim} (kill -9)")
        run.phase(Phase(200, 15))
        took, restored = _recovered(cluster, job["jid"], killed_at)
        print(f"  restored checkpoint {restored['id']}, every task running {took:.0f} s after the kill")
        assert victim not in cluster.taskmanager_of(job["jid"])
        shot = os.environ.get("PAYSTREAM_FLINK_SCREENSHOT")
        if shot:  # the README's picture: the job's graph in the Web UI, after the restore
            _screenshot(f"{cluster.web_ui}#/job/running/{job['jid']}/overview", shot)
        run.phase(Phase(200, 10))
        res = _finish(run, pool)
        # stopping the run cancelled its job on the cluster
        assert cluster.job(job["jid"])["state"] == "CANCELED"
    _assert_exact(res)


# What the local application cluster changes of the image's options: where things are on this
# machine, nothing else.
LOCAL_ADDRESSES = {
    "--kafka_bootstrap_servers",
    "--kafka_topic",
    "--kafka_consumer_group",
    "--environment_config",
    "--hmac_key_file",
    "--redis_url",
    "--redis_password_file",
    "--warehouse",
}


def test_an_application_cluster_in_reactive_mode_scales_up_and_down_under_load(
    broker: KafkaBroker, tmp_path: Path
) -> None:
    password = "local-" + str(time.time_ns())
    (tmp_path / "redis-password").write_text(password + "\n")
    (tmp_path / "hmac-key").write_text("11" * 32 + "\n")
    with (
        RedisServer(str(tmp_path), requirepass=password) as redis_server,
        WorkerPool(str(tmp_path / "worker.log")) as pool,
    ):
        reader_url = redis_server.url.replace("redis://", f"redis://:{password}@")
        run = _live_run(broker, reader_url, tmp_path, 72, pool, [])
        changes = [
            f"--kafka_bootstrap_servers={broker.bootstrap_servers}",
            f"--kafka_topic={run.topic}",
            f"--kafka_consumer_group={run.group}",
            f"--environment_config={pool.address}",
            f"--hmac_key_file={tmp_path / 'hmac-key'}",
            f"--redis_url={redis_server.url}",
            f"--redis_password_file={tmp_path / 'redis-password'}",
            f"--warehouse=duckdb:{run.warehouse}",
        ]
        assert {c.split("=", 1)[0] for c in changes} <= LOCAL_ADDRESSES
        options = with_changes(read_options(), changes)
        jar = build(tmp_path / "usrlib", options, log=tmp_path / "build.log")
        # the jar carries the image's options, and the changed addresses
        baked = baked_options(jar)
        assert int(baked["max_parallelism"]) == 40 and baked["environment_type"] == "EXTERNAL"
        assert baked["kafka_topic"] == run.topic and baked["flink_master"] == "[auto]"
        # checkpointing is the cluster's (flinkConfiguration), not the building machine's
        assert not {"state_backend_storage_path", "checkpointing_interval", "state_backend"} & {
            k for k, v in baked.items() if v not in (None, -1, "-1")
        }, {
            k: baked.get(k) for k in ("state_backend_storage_path", "checkpointing_interval", "state_backend")
        }
        try:
            with FlinkCluster(tmp_path / "flink", application=tmp_path / "usrlib").start(
                taskmanagers=1
            ) as cluster:
                job = wait_for("the application's job", cluster.running_job, 180)
                wait_for("the job on 2 slots", lambda: cluster.job_running(job["jid"], parallelism=2), 180)
                run.warm_up(timeout_s=WARM_UP_S)
                run.phase(Phase(200, 15))
                t0 = time.monotonic()
                cluster.add_taskmanager()
                run.lag_from_offsets = True
                wait_for("the job on 4 slots", lambda: cluster.job_running(job["jid"], parallelism=4), 180)
                up_s = time.monotonic() - t0
                print(f"  scaled up: 2 -> 4 subtasks in {up_s:.0f} s")
                run.phase(Phase(200, 15))
                t0 = time.monotonic()
                cluster.kill_taskmanager(graceful=True)
                wait_for("the job on 2 slots", lambda: cluster.job_running(job["jid"], parallelism=2), 180)
                down_s = time.monotonic() - t0
                print(f"  scaled down: 4 -> 2 subtasks in {down_s:.0f} s")
                assert _restored(cluster, job["jid"]), "each rescale restores the latest checkpoint"
                run.phase(Phase(200, 15))
                run.drain()
                cluster.cancel(job["jid"])
                # an application cluster lives for its job: the JobManager ends with it
                wait_for("the JobManager to end with its job", lambda: not cluster.jobmanager_running(), 120)
            pool.stop()
            res = run.finish()
        except BaseException:
            run.abort()
            raise
    _assert_exact(res)


def test_the_worker_pool_killed_and_started_again_the_result_is_exact(
    broker: KafkaBroker, redis_server: RedisServer, tmp_path: Path
) -> None:
    with _session_run(broker, redis_server.url, tmp_path, 73, taskmanagers=1) as (cluster, pool, run, job):
        run.phase(Phase(200, 15))
        killed_at = time.monotonic()
        pool.kill()
        run.lag_from_offsets = True
        print("  worker pool killed (kill -9)")
        time.sleep(3)
        pool.start()
        took, restored = _recovered(cluster, job["jid"], killed_at)
        print(f"  restored checkpoint {restored['id']}, every task running {took:.0f} s after the kill")
        run.phase(Phase(200, 15))
        res = _finish(run, pool)
    _assert_exact(res)


# -- one source of truth: what the local clusters run is what Kubernetes gets


def test_the_local_clusters_run_the_deployments_flink_configuration(tmp_path: Path) -> None:
    """Every key of the FlinkDeployment's flinkConfiguration is in the local cluster's
    configuration with the same value, unless LOCAL_CHANGES names it, with its reason."""
    deployed = deployment_conf()
    for application in (True, False):
        local = cluster_conf(tmp_path, 8081, 6123, application)
        changed = {k for k in deployed if local.get(k) != deployed[k]}
        assert changed <= set(LOCAL_CHANGES), changed - set(LOCAL_CHANGES)
        assert all(LOCAL_CHANGES[k] for k in changed)
        assert (local.get("scheduler-mode") == "reactive") is application
    assert {"state.checkpoints.dir", "scheduler-mode"} <= set(LOCAL_CHANGES)


def test_the_image_builds_the_jar_the_application_cluster_runs() -> None:
    """The Dockerfile builds usrlib/ with the command and options file of the application
    test (flink_app.build), where the FlinkDeployment's jarURI looks for it, and no other
    jar is built or copied."""
    dockerfile = (ROOT / "k8s-flink" / "image" / "Dockerfile").read_text()
    options = OPTIONS_FILE.relative_to(ROOT)  # what the application test builds from
    command = f"python3 -m paystream_dev flink app-jar --options {options} --out /opt/flink/usrlib"
    assert command in " ".join(dockerfile.replace("\\\n", " ").split())
    assert "output_executable_path" not in dockerfile and "/opt/apache/beam" not in dockerfile
    assert f"FROM flink:{FLINK_DIST_VERSION}-" in dockerfile  # the Flink these tests run
    with open(DEPLOYMENT, encoding="utf-8") as handle:
        job = yaml.safe_load(handle)["spec"]["job"]
    assert job["jarURI"] == f"local:///opt/flink/usrlib/{APP_JAR}"
    assert job["entryClass"] == APPLICATION_ENTRY_CLASS


def test_max_parallelism_covers_the_largest_cluster_and_the_partitions() -> None:
    """Reactive mode scales every step up to --max_parallelism: at least the HPA's largest
    slot count and the topic's partitions (key groups are fixed for the job's life). The
    Kafka read is split by --parallelism when the jar is built: one split per partition."""
    flags = dict(f.split("=", 1) for f in read_options() if "=" in f)
    max_parallelism = int(flags["--max_parallelism"])
    with open(ROOT / "k8s-flink" / "base" / "hpa.yaml", encoding="utf-8") as handle:
        hpa = yaml.safe_load(handle)["spec"]
    slots = int(deployment_conf()["taskmanager.numberOfTaskSlots"])
    assert max_parallelism >= hpa["maxReplicas"] * slots
    variables = (ROOT / "terraform" / "variables.tf").read_text()
    partitions = int(
        variables.split('variable "kafka_partitions"', 1)[1]
        .split("default", 1)[1]
        .split("=", 1)[1]
        .split()[0]
    )
    assert max_parallelism >= partitions
    # the read's splits are made when the jar is built, from --parallelism: one per partition
    assert int(flags["--parallelism"]) == partitions


def test_a_run_on_a_cluster_says_where_its_python_steps_run(tmp_path: Path, capsys: Any) -> None:
    """Without an environment, Beam would start Docker containers on the TaskManagers: the run
    stops at once and names the flags instead."""
    from beam_pipeline.__main__ import main

    rc = main(
        [
            "--runner=FlinkRunner",
            "--flink_master=127.0.0.1:1",
            "--streaming",
            "--source=kafka",
            "--kafka_bootstrap_servers=127.0.0.1:1",
            f"--checkpoint_dir={tmp_path / 'checkpoints'}",
            f"--warehouse=duckdb:{tmp_path / 'w.duckdb'}",
        ]
    )
    assert rc == 2
    assert "--environment_type=EXTERNAL --environment_config=HOST:PORT" in capsys.readouterr().err
    # and a cluster that does not answer is named, not a stack trace
    rc = main(
        [
            "--runner=FlinkRunner",
            "--flink_master=127.0.0.1:1",
            "--environment_type=LOOPBACK",
            "--streaming",
            "--source=kafka",
            "--kafka_bootstrap_servers=127.0.0.1:1",
            f"--warehouse=duckdb:{tmp_path / 'w.duckdb'}",
        ]
    )
    assert rc == 2
    assert "could not reach the Flink cluster at --flink_master=127.0.0.1:1" in capsys.readouterr().err
