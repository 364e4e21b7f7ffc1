"""Grading on a real Dask cluster (coursekit/grading/cluster.py): a `dask scheduler` and two `dask worker`
processes on 127.0.0.1, with the course's mutual TLS (tests/daskcluster.py; who else can use a
cluster is tests/grading/test_cluster_security.py). The class graded on the cluster, with one worker
killed while it grades, gives the gradebook the local runner gives; a worker without the sandbox
refuses; a worker checks the course files it grades with."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder import ASSIGNMENT
from coursekit.grading import runner
from coursekit.core.course import Course, grading_env
from daskcluster import LoopbackCluster, parent
from gradebooks import gradebook_rows
from test_runner import CLASS, build_class


def run_runner(root: Path, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "coursekit.grading.runner", ASSIGNMENT, "--no-progress", "--course", str(root), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=grading_env())


def new_class(root: Path) -> Course:
    course = Course.copy_of(root)
    course.generate(ASSIGNMENT)
    build_class(course)
    return course


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two workers on 127.0.0.1; afterwards, nothing of them is left running."""
    folder = tmp_path_factory.mktemp("dask")
    with LoopbackCluster(folder, env=grading_env()) as dask:
        dask.add_worker("w1")
        dask.add_worker("w2")
        yield dask
    assert _wait_until(lambda: not dask.leftovers(), 60), dask.leftovers()


@pytest.fixture(scope="module")
def local_class(runner_class) -> Course:
    """The class graded by the local runner (conftest)."""
    return runner_class


@pytest.fixture(scope="module")
def cluster_class(cluster, tmp_path_factory):
    """The same class graded on the cluster, one worker SIGKILLed while nbgrader grades on it."""
    course = new_class(tmp_path_factory.mktemp("on-cluster") / "course")
    cmd = [sys.executable, "-m", "coursekit.grading.runner", ASSIGNMENT, "--no-progress", "--course", str(course.root),
           "--scheduler", cluster.address]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=grading_env())
    victim = killed = None
    deadline = time.monotonic() + 600
    while victim is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
        for worker in cluster.workers:
            graders = [pid for pid in worker.grading_processes() if b"autograde" in _cmdline(pid)]
            if graders:
                victim, student = worker, _student_of(graders[0])
                killed = parent(graders[0])  # the worker process that started nbgrader
                assert killed in worker.worker_pids()
                time.sleep(3)  # well inside grading: nbgrader has started the sandboxed kernel
                orphans = worker.grading_processes()
                os.kill(killed, signal.SIGKILL)
                break
    out, err = proc.communicate(timeout=1200)
    assert victim is not None, f"no worker was seen grading\n{err[-3000:]}"
    return dict(course=course, returncode=proc.returncode, stdout=out, stderr=err, victim=victim,
                killed_pid=killed, student=student, orphans=orphans)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _student_of(pid: int) -> str:
    """The id nbgrader was given: the runner passes ``--student=<id>`` (never read as an option)."""
    args = _cmdline(pid).split(b"\0")
    return next(a for a in args if a.startswith(b"--student=")).split(b"=", 1)[1].decode()


def test_the_cluster_is_the_course_set_up_mutual_tls(cluster, cluster_class):
    """The class below is graded through the course's TLS set-up, as the README starts it."""
    assert cluster.address.startswith("tls://") and cluster.security.require_encryption
    assert f"at {cluster.address}" in cluster_class["stderr"]


def test_cluster_gradebook_equals_local_runner_field_by_field(cluster_class, local_class):
    ours = gradebook_rows(cluster_class["course"], list(CLASS))
    theirs = gradebook_rows(local_class, list(CLASS))
    assert len(theirs) > 60
    assert ours == theirs, cluster_class["stderr"][-3000:]
    for student in CLASS:  # the graded folders too
        names = sorted(p.name for p in cluster_class["course"].layout.autograded(student, ASSIGNMENT).iterdir())
        assert names == sorted(p.name for p in local_class.layout.autograded(student, ASSIGNMENT).iterdir())


def test_a_killed_worker_is_replaced_and_every_student_is_graded_once(cluster_class, cluster):
    course = cluster_class["course"]
    assert cluster_class["returncode"] == 0, cluster_class["stderr"][-3000:]
    assert f"graded {len(CLASS)} of {len(CLASS)} submissions" in cluster_class["stdout"]
    assert cluster_class["student"] in CLASS
    # Every student has exactly one submission record, every check cell scored.
    rows = gradebook_rows(course, list(CLASS))
    assert {k[0] for k in rows if k[3] == "submission"} == set(CLASS)
    assert all(runner.is_graded(course.layout, s, ASSIGNMENT) for s in CLASS)
    # The nanny started a new worker process in place of the killed one ...
    victim = cluster_class["victim"]
    assert _wait_until(lambda: [p for p in victim.worker_pids() if p != cluster_class["killed_pid"]], 120)
    assert len(cluster.client.nthreads()) == 2
    # ... and the nbgrader process and sandboxed kernel of the killed worker died with it.
    assert _wait_until(lambda: not [p for p in cluster_class["orphans"] if _cmdline(p)], 60)
    assert "2 Dask workers" in cluster_class["stderr"]


def test_a_worker_without_the_sandbox_refuses(tmp_path):
    """Its own scheduler and one worker that cannot start bubblewrap: the runner stops before
    grading anything, with the local runner's refusal, and a task sent to that worker fails with it."""
    course = new_class(tmp_path / "course")
    no_bwrap = dict(grading_env(), PATH=str(Path(sys.executable).parent))  # as test_runner's refusal test
    with LoopbackCluster(tmp_path / "dask", env=grading_env()) as cluster:
        cluster.add_worker("nosandbox", env=no_bwrap)
        proc = run_runner(course.root, "--scheduler", cluster.address)
        assert proc.returncode == 2, proc.stdout + proc.stderr[-3000:]
        assert "cannot start the sandbox" in proc.stderr and "bubblewrap" in proc.stderr
        assert "Grading refused" in proc.stderr
        assert not any(course.layout.autograded(s, ASSIGNMENT).exists() for s in CLASS)
        assert gradebook_rows(course, list(CLASS)) == {}
        # The task itself refuses too (for a worker that joins after the runner's first check).
        course_files, task = _course_and_task(course, "ada", tmp_path)
        from coursekit.grading.cluster import grade_on_worker, graded_from_data

        answer = cluster.client.submit(grade_on_worker, course_files, task, pure=False).result(timeout=300)
        assert set(answer) == {"refused"} and "cannot start the sandbox" in answer["refused"]  # plain data
        assert isinstance(graded_from_data(answer, "ada"), runner.Refused)
    assert not cluster.leftovers()


def test_a_worker_checks_the_course_files_it_grades_with(cluster, local_class, tmp_path):
    """A task whose course files are not the client's (here: the archive has an edited config)
    is refused on the worker, before nbgrader runs."""
    course_files, task = _course_and_task(local_class, "ada", tmp_path)
    import io
    import tarfile

    edited = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(course_files.archive)) as src, tarfile.open(fileobj=edited, mode="w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if member.name == "nbgrader_config.py":
                data += b"\nc.Execute.timeout = 1\n"
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    forged = dataclasses.replace(course_files, archive=edited.getvalue())
    from coursekit.grading.cluster import grade_on_worker

    answer = cluster.client.submit(grade_on_worker, forged, task, pure=False).result(timeout=300)
    assert set(answer) == {"refused"} and "not the client's" in answer["refused"]
    # The genuine files pass the same check on the worker (loopback: its folder is readable here).
    private = cluster.client.submit(runner.check_worker, course_files, tmp_path / "genuine" / "course",
                                    pure=False).result(timeout=300)
    assert runner.CourseFiles.digest_of(private.root, course_files.names,
                                        runner.private_gradebook(private.root).read_bytes()) == course_files.digest


def _course_and_task(course: Course, student: str, scratch: Path):
    from coursekit.core import gradebook

    with gradebook.CourseGradebook(course.db_url) as db:
        files = runner.CourseFiles.of(course.layout, ASSIGNMENT, db.structure(), scratch)
        task = runner.SubmissionTask.of(course.layout, student, ASSIGNMENT, db.rows(student, ASSIGNMENT), 1)
    return files, task


def _wait_until(condition, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.3)
    return condition()
