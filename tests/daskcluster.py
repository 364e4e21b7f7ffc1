"""A real Dask cluster on 127.0.0.1 for tests and benchmarks: ``dask scheduler`` and ``dask worker``
processes (each worker under its nanny, one thread), started and stopped here; nothing is left
running when the context ends.

By default it is the course's set-up: mutual TLS with the course's certificates
(``coursekit.grading.cluster.ensure_certificates``, as bin/setup makes them), the ones the runner uses.
``tls=False`` starts Dask's stock plain-TCP cluster, to show what that set-up lets others do."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 180  # s; a loaded 2-core machine starts a worker in ~10 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen  # the `dask worker` command: its nanny, which starts the worker process
    folder: Path

    def grading_processes(self) -> list[int]:
        """nbgrader, sandbox and kernel processes working in this worker's folder."""
        return [pid for pid, cmd, cwd in _processes()
                if cwd.startswith(str(self.folder)) and ("nbgrader" in cmd or "coursekit.execution.sandbox" in cmd
                                                         or "ipykernel" in cmd)]

    def worker_pids(self) -> list[int]:
        """The processes the nanny (the `dask worker` command) started: the worker process, and
        multiprocessing's helpers."""
        return [pid for pid, _, _ in _processes() if parent(pid) == self.proc.pid]


def _processes() -> list[tuple[int, str, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append((int(entry.name), cmd, os.readlink(entry / "cwd")))
            except OSError:
                continue
    return found


def parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


class LoopbackCluster:
    """``with LoopbackCluster(folder) as cluster: cluster.add_worker("w1"); cluster.address``"""

    def __init__(self, folder: Path, env: dict | None = None, tls: bool = True):
        from coursekit.grading import cluster

        self.folder = Path(folder)
        self.env = dict(env or os.environ)
        self.port = free_port()
        self.tls = tls
        self.address = f"{'tls' if tls else 'tcp'}://127.0.0.1:{self.port}"
        self.certificates = cluster.ensure_certificates() if tls else None
        self.security = cluster.course_security(self.certificates) if tls else None
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[Worker] = []
        self.client = None

    def tls_args(self, role: str) -> list[str]:
        from coursekit.grading import cluster

        return cluster.tls_args(role, self.certificates) if self.tls else []

    def _dask(self, *args: str, log: Path, env: dict | None = None) -> subprocess.Popen:
        cmd = [str(Path(sys.executable).with_name("dask")), *args]
        with open(log, "ab") as out:
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env or self.env, start_new_session=True, cwd=self.folder)

    def __enter__(self) -> "LoopbackCluster":
        from distributed import Client

        self.folder.mkdir(parents=True, exist_ok=True)
        self.scheduler = self._dask("scheduler", "--host", f"{self.address.split('://')[0]}://127.0.0.1",
                                    "--port", str(self.port), "--no-dashboard", "--no-show",
                                    *self.tls_args("scheduler"), log=self.folder / "scheduler.log")
        try:
            self.client = Client(self.address, timeout=f"{START_TIMEOUT}s", set_as_default=False,
                                 security=self.security)
        except BaseException:
            self.close()
            raise
        return self

    def add_worker(self, name: str, env: dict | None = None, wait: bool = True) -> Worker:
        folder = self.folder / name
        folder.mkdir(parents=True, exist_ok=True)
        before = len(self.client.nthreads())
        proc = self._dask("worker", self.address, "--name", name, "--nthreads", "1", "--nworkers", "1",
                          "--no-dashboard", "--local-directory", str(folder), "--memory-limit", "0",
                          *self.tls_args("worker"), log=self.folder / f"{name}.log", env=env)
        worker = Worker(name, proc, folder)
        self.workers.append(worker)
        if wait:
            self.wait_for(before + 1, name)
        return worker

    def wait_for(self, count: int, what: str = "") -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while len(self.client.nthreads()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what or 'workers'}: not connected after {START_TIMEOUT} s; see {self.folder}")
            time.sleep(0.2)

    def remove_worker(self) -> None:
        worker = self.workers.pop()
        before = len(self.client.nthreads())
        _stop(worker.proc)
        deadline = time.monotonic() + 60
        while len(self.client.nthreads()) >= before and time.monotonic() < deadline:
            time.sleep(0.2)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        for worker in reversed(self.workers):
            _stop(worker.proc)
        if self.scheduler is not None:
            _stop(self.scheduler)

    def __exit__(self, *exc) -> None:
        self.close()

    def leftovers(self) -> list[tuple[int, str]]:
        """Processes still running from this cluster (by command line or working folder)."""
        return [(pid, cmd) for pid, cmd, cwd in _processes()
                if pid != os.getpid() and (cwd.startswith(str(self.folder)) or self.address in cmd
                                           or str(self.folder) in cmd)]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the command's whole process group (nanny, worker, nbgrader), then SIGKILL."""
    for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(grace)
            # the group may outlive its leader: give the rest the same signal
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        except subprocess.TimeoutExpired:
            continue
    proc.poll()
