"""Grading on a Dask distributed cluster: the class runner's pool when it is given ``--scheduler``.

    python -m coursekit.runner week2 --scheduler tcp://HOST:8786

One Dask task per submission runs ``coursekit.runner.grade_submission`` on a worker: the same
code as on one machine (private course copy, the real ``nbgrader autograde``, the sandbox). The
worker gets everything as data from the runner and shares no file with it:

- the course files (config, ``source/``, release, the gradebook's structure; a few hundred KB)
  are one task (``coursekit-course-...``) that every grading task depends on, so Dask sends them
  once to each worker, and the scheduler can send them again if the worker holding them dies;
- each grading task carries its submission folder and the student's gradebook rows, and
  returns the graded folder and the rows nbgrader wrote; the runner merges them: it stays the
  only writer of the gradebook and of ``autograded/``.

Before anything is graded, every worker is asked to check that it can grade as the runner would
(``check``): the sandbox starts, the grading code and packages are the runner's. Each task checks
again on its worker, and also that the course files it unpacked hash as on the runner's disk.
A worker that refuses fails its task with the reason (``runner.Refused``): the runner stops.

A worker that dies while grading (killed, its node lost) takes its task with it; the scheduler
gives the task to another worker, up to ``distributed.scheduler.allowed-failures`` times (3 by
default), after which the submission is reported as not graded. Tasks are handed out a few per
worker thread at a time, so a class of thousands is not held in the scheduler's memory, and each
task's gradebook rows are read just before it is sent.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import tempfile
import uuid
from pathlib import Path

from coursekit import runner, sandbox
from coursekit.runner import CourseFiles, Graded, Refused, SubmissionTask

WORKERS_TIMEOUT = 600  # seconds to wait for a first worker (a batch job may be starting)
TASKS_PER_THREAD = 2   # tasks handed out ahead of the workers, so that none waits for the runner


def _hold(course: CourseFiles) -> CourseFiles:
    """The course files, as a task's result: Dask moves them to each worker once."""
    return course


def grade_on_worker(course: CourseFiles, task: SubmissionTask) -> Graded:
    """One Dask task: grade one submission in the worker's own local folder."""
    from distributed import get_worker

    local = Path(get_worker().local_directory)
    work = Path(tempfile.mkdtemp(prefix=f"coursekit-{task.student[:40]}-", dir=local))
    return runner.grade_submission(course, task, work)


def worker_refusal(settings: sandbox.Settings, client_environment: dict) -> str | None:
    """Run on every worker before grading: why it cannot grade as the runner would, or None."""
    if settings.enabled:
        try:
            sandbox.check(settings)
        except sandbox.SandboxUnavailable as err:
            return f"on {platform.node()}: {sandbox.refusal(str(err))}"
    ours = runner.environment()
    if ours != client_environment:
        return (f"on {platform.node()}: the grading environment differs from the client's "
                f"({runner.environment_differences(client_environment, ours)})")
    return None


async def _worker_refusal_in_thread(settings: sandbox.Settings, client_environment: dict) -> str | None:
    """``worker_refusal`` off the worker's event loop (starting a sandbox takes a moment)."""
    return await asyncio.get_running_loop().run_in_executor(None, worker_refusal, settings, client_environment)


class DaskPool:
    """Submissions graded as Dask tasks on the cluster of ``address``."""

    def __init__(self, address: str, workers_timeout: float = WORKERS_TIMEOUT):
        from distributed import Client, as_completed

        self.address = address
        self.client = Client(address, timeout="30s", set_as_default=False)
        self.done = as_completed(loop=self.client.loop, with_results=False)
        self.pending: dict = {}
        self.course_future = None
        self.workers_timeout = workers_timeout

    def threads(self) -> int:
        return sum(self.client.nthreads().values())

    def describe(self) -> str:
        workers = self.client.nthreads()
        return f"{len(workers)} Dask worker{'s' * (len(workers) != 1)} ({self.threads()} threads) at {self.address}"

    def window(self) -> int:
        return max(1, TASKS_PER_THREAD * self.threads())

    def check(self, course: CourseFiles) -> None:
        """Refuse the run unless every connected worker can grade as this process would."""
        try:
            self.client.wait_for_workers(1, timeout=self.workers_timeout)
        except TimeoutError:
            raise runner.RunnerError(f"no Dask worker joined {self.address} within {self.workers_timeout:g} s") from None
        found = self.client.run(_worker_refusal_in_thread, course.sandbox, course.environment)
        refusals = [f"worker {address} {reason}" for address, reason in sorted(found.items()) if reason]
        if refusals:
            raise runner.RunnerError("\n".join(refusals))

    def submit(self, course: CourseFiles, task: SubmissionTask) -> None:
        if self.course_future is None:
            self.course_future = self.client.submit(_hold, course, key=f"coursekit-course-{uuid.uuid4().hex}",
                                                    pure=False)
        future = self.client.submit(grade_on_worker, self.course_future, task, pure=False,
                                    key=f"coursekit-grade-{task.student[:80]}-{uuid.uuid4().hex}")
        self.pending[future.key] = (future, task.student)
        self.done.add(future)

    def in_flight(self) -> int:
        return len(self.pending)

    def next_done(self) -> tuple[str, Graded | BaseException]:
        while True:
            future = next(self.done)
            if future.key in self.pending:  # not one that was cancelled
                break
        _, student = self.pending.pop(future.key)
        try:
            return student, future.result()
        except Refused as err:
            return student, err
        except Exception as err:  # noqa: BLE001 (e.g. KilledWorker: its workers died too often)
            return student, err

    def cancel(self) -> None:
        """Drop the tasks that have not started; those running finish and are kept."""
        for key, (future, student) in list(self.pending.items()):
            if future.status == "pending" and not self._processing(key):
                future.cancel()
                self.pending.pop(key)

    def _processing(self, key: str) -> bool:
        return any(key in keys for keys in self.client.processing().values())

    def stop(self) -> None:
        self.client.cancel([future for future, _ in self.pending.values()])
        self.pending.clear()

    def close(self) -> None:
        self.client.close()


# --- starting workers on a Slurm cluster ----------------------------------------------------------


def slurm_cluster(cores: int = 16, walltime: str = "04:00:00", queue: str | None = None,
                  account: str | None = None, python: str | None = None, **kwargs):
    """A dask-jobqueue ``SLURMCluster`` whose jobs are grading nodes: one job per node (``--exclusive``),
    one worker process per core with one thread each (``runner.MEMORY_PER_WORKER`` of memory each),
    started as root through ``sudo -n`` (the sandbox gives each kernel a user id of its own, which
    only root can do; a worker that is not root refuses, and the runner stops). The nodes run the
    course's own virtual environment (the same requirements.lock and coursekit: checked) and need
    bubblewrap; course files are shipped by the runner, so no shared folder is needed.

        cluster = slurm_cluster(queue="grading"); cluster.scale(jobs=4)
        python -m coursekit.runner week2 --scheduler <cluster.scheduler_address>
    """
    from dask_jobqueue import SLURMCluster

    gb_per_worker = runner.MEMORY_PER_WORKER // runner.GB
    prologue = ["export TF_CPP_MIN_LOG_LEVEL=3"]
    if os.environ.get("COURSEKIT_DATA_DIR"):
        prologue.append(f"export COURSEKIT_DATA_DIR={os.environ['COURSEKIT_DATA_DIR']}")
    return SLURMCluster(
        cores=cores, processes=cores, memory=f"{cores * gb_per_worker}GiB", walltime=walltime, queue=queue,
        account=account, python=python or f"sudo -n --preserve-env {sys.executable}",
        job_extra_directives=["--exclusive"], job_script_prologue=prologue,
        worker_extra_args=["--local-directory", "/tmp/coursekit-dask"], **kwargs)
