"""A Flink cluster's REST API, for a run submitted to it (``--flink_master=HOST:PORT``).

The Beam job server submits the job and then only watches it: cancelling the Beam job
does not reach a job on a remote cluster, so a stopped run would leave its Flink job
running (or restarting forever, once its LOOPBACK workers are gone). The run cancels it
here, by name. The cluster's own configuration also tells a run where its checkpoints go.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any, Dict, List, Optional

__all__ = ["FlinkRest"]


class FlinkRest:
    def __init__(self, master: str) -> None:
        master = master.strip().rstrip("/")
        self.base = master if master.startswith(("http://", "https://")) else f"http://{master}"

    def call(self, path: str, method: str = "GET", timeout_s: float = 10.0) -> Any:
        """One REST call; its JSON answer (None: an empty one)."""
        request = urllib.request.Request(self.base + path, method=method)
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
        return json.loads(body) if body else None

    def config(self) -> Dict[str, str]:
        """The JobManager's configuration."""
        return {entry["key"]: entry["value"] for entry in self.call("/jobmanager/config")}

    def jobs(self) -> List[Dict[str, Any]]:
        return list(self.call("/jobs/overview")["jobs"])

    def job_named(self, name: str) -> Optional[Dict[str, Any]]:
        """The newest job of that name."""
        found = [job for job in self.jobs() if job["name"] == name]
        return max(found, key=lambda job: job["start-time"]) if found else None

    def cancel_named(self, name: str, timeout_s: float = 30.0) -> Optional[str]:
        """Cancel the job of that name unless it has ended; wait until it has. Returns its id."""
        job = self.job_named(name)
        if job is None:
            return None
        if job["state"] not in ("CANCELED", "FAILED", "FINISHED"):
            self.call(f"/jobs/{job['jid']}?mode=cancel", method="PATCH")
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                state = self.call(f"/jobs/{job['jid']}")["state"]
                if state in ("CANCELED", "FAILED", "FINISHED"):
                    break
                time.sleep(0.5)  # a remote job's state, polled until it has ended
        return str(job["jid"])

    def describe(self, name: str) -> str:
        """A progress line for the job of that name: its state, tasks and checkpoints."""
        job = self.job_named(name)
        if job is None:
            return f"submitting job {name} to {self.base}"
        tasks = job["tasks"]
        counts = self.call(f"/jobs/{job['jid']}/checkpoints")["counts"]
        return (
            f"job {job['state']} on the cluster | tasks running {tasks['running']}/{tasks['total']} | "
            f"checkpoints {counts['completed']} | restored {counts['restored']} | Web UI {self.base}"
        )
