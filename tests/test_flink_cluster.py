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

import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from paystream_dev.flink_cluster import FlinkCluster
from paystream_dev.harness.live import LiveResult, LiveRun, Phase
from paystream_dev.harness.services import KafkaBroker, RedisServer, WorkerPool
from paystream_dev.harness.wait import wait_for
from simulator.live import LiveConfig


@pytest.fixture(scope="module")
def broker() -> Iterator[KafkaBroker]:
    with KafkaBroker() as b:
        yield b


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
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


def _finish(run: LiveRun, pool: WorkerPool) -> LiveResult:
    """Drain; stop the run (which cancels its job on the cluster) and the worker pool
    (which holds the warehouse open); check."""
    run.drain()
    if run.proc is not None:
        assert run.stop() == 130, run.log_text(last=True)[-3000:]
    pool.stop()
    return run.finish()


def test_a_taskmanager_killed_mid_stream_the_job_restores_and_the_result_is_exact(
    broker: KafkaBroker, redis_server: RedisServer, tmp_path: Path
) -> None:
    with (
        FlinkCluster(tmp_path / "flink").start(taskmanagers=2) as cluster,
        WorkerPool(str(tmp_path / "worker.log")) as pool,
    ):
        run = _live_run(broker, redis_server.url, tmp_path, 71, pool, _session_args(cluster, pool))
        try:
            run.start()
            run.warm_up()
            job = wait_for("the job on the cluster", cluster.running_job, 60)
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
            run.phase(Phase(200, 10))
            res = _finish(run, pool)
        except BaseException:
            run.abort()
            raise
        # stopping the run cancelled its job on the cluster
        assert cluster.job(job["jid"])["state"] == "CANCELED"
    _assert_exact(res)


def test_the_worker_pool_killed_and_started_again_the_result_is_exact(
    broker: KafkaBroker, redis_server: RedisServer, tmp_path: Path
) -> None:
    with (
        FlinkCluster(tmp_path / "flink").start(taskmanagers=1) as cluster,
        WorkerPool(str(tmp_path / "worker.log")) as pool,
    ):
        run = _live_run(broker, redis_server.url, tmp_path, 73, pool, _session_args(cluster, pool))
        try:
            run.start()
            run.warm_up()
            job = wait_for("the job on the cluster", cluster.running_job, 60)
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
        except BaseException:
            run.abort()
            pool.stop()
            raise
    _assert_exact(res)
