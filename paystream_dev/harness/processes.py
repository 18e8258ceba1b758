"""Process trees: stopped as a supervisor stops them, killed at once as a crash does, and
their RSS sampled in a thread.

A run of ``python -m beam_pipeline`` on local Flink is a tree: the driver with its Python
workers, the job server with its Flink JVM, any Java worker it started. Each function
here acts on the whole tree, so nothing of a run outlives it.
"""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import psutil

__all__ = ["RssSampler", "TreeRss", "kill_tree", "stop_tree", "tree"]


def tree(pid: int) -> List[psutil.Process]:
    """The process ``pid`` and all its descendants; empty once it is gone."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def stop_tree(proc: subprocess.Popen, grace_s: float = 60.0) -> int:
    """SIGTERM, as a supervisor stops a run (SIGKILL ``grace_s`` later); then its whole tree
    goes. Returns the run's exit code."""
    children = tree(proc.pid)[1:]
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    for child in children:
        try:
            child.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(children, timeout=30)  # what runs next starts on an idle machine
    return proc.returncode


def kill_tree(pid: int) -> None:
    """``kill -9`` of a process and all its descendants, all at once (a crash: nothing
    gets to clean up)."""
    procs = tree(pid)
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=30)


class RssSampler:
    """The RSS of named groups of processes, sampled in a thread every ``every_s`` from
    ``start()`` to ``stop()``.

    ``watch(name, pids)`` adds a group: ``pids()`` gives, at each sampling, the pids that
    count for it then (a process gone meanwhile counts 0). ``samples`` holds one
    (seconds since ``t0``, {group: bytes}) per sampling; a sampling at which no group has
    a pid is left out.
    """

    def __init__(self, every_s: float = 1.0, t0: Optional[float] = None) -> None:
        self.samples: List[Tuple[float, Dict[str, int]]] = []
        # beside each sample: the CPU seconds (user + system) each group's processes have
        # used since they started, summed over the pids of the group then
        self.cpu: List[Tuple[float, Dict[str, float]]] = []
        self._procs: Dict[int, psutil.Process] = {}
        self._every = every_s
        self._t0 = time.monotonic() if t0 is None else t0
        self._groups: Dict[str, Callable[[], Iterable[int]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def watch(self, name: str, pids: Callable[[], Iterable[int]]) -> None:
        self._groups[name] = pids

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            row: Dict[str, int] = {}
            cpu: Dict[str, float] = {}
            seen = False
            for name, pids in list(self._groups.items()):
                total, seconds = 0, 0.0
                for pid in pids():
                    seen = True
                    try:
                        proc = self._procs.get(pid)
                        if proc is None:
                            proc = self._procs[pid] = psutil.Process(pid)
                        with proc.oneshot():
                            total += proc.memory_info().rss
                            times = proc.cpu_times()
                        seconds += times.user + times.system
                    except psutil.Error:
                        pass
                row[name] = total
                cpu[name] = seconds
            if seen:
                at = time.monotonic() - self._t0
                self.samples.append((at, row))
                self.cpu.append((at, cpu))
            self._stop.wait(self._every)

    def totals(self) -> List[Tuple[float, int]]:
        """Each sample's bytes summed over its groups: (seconds since ``t0``, bytes)."""
        return [(t, sum(row.values())) for t, row in self.samples]

    @property
    def peak(self) -> int:
        """The largest sum over the groups of one sample (0 before the first)."""
        return max((total for _, total in self.totals()), default=0)

    def stop(self) -> int:
        """Stop sampling; returns ``peak``."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        return self.peak


class TreeRss(RssSampler):
    """The RSS of a process and all its descendants (one group, ``"tree"``), sampled every
    ``every_s`` from now until ``stop()``; no sample once the process is gone."""

    def __init__(self, pid: int, every_s: float = 0.2, t0: Optional[float] = None) -> None:
        super().__init__(every_s, t0)
        self.watch("tree", lambda: [proc.pid for proc in tree(pid)])
        self.start()
