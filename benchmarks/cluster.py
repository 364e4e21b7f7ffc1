"""Grading on a Dask cluster: throughput with 1 and 2 loopback workers against the local runner,
side by side in one run; what scheduling costs per submission; a model of a 2,000-student class.
results/cluster.txt holds a recorded run.

    .venv/bin/python benchmarks/cluster.py [-k 4] [--rounds 1] [--no-training]

(a) K copies of a submission that trains no model (tests/fixtures/submissions/all-but-training:
    two notebooks, every cell but the training ones), graded four ways, alternating, --rounds
    times: the local runner with 1 and 2 workers, and the runner with --scheduler on a loopback
    Dask cluster (`dask scheduler`, `dask worker --nthreads 1`) of 1 and 2 workers. One
    TensorFlow thread per submission everywhere, so that only the pool differs.
(b) What the cluster adds to one submission, measured directly: the round trip of an empty task
    (scheduler and worker bookkeeping), and shipping (packing the submission, sending it with
    the course files, unpacking and checking them on the worker: a task that does all of
    grade_submission but run nbgrader), against the time a worker spends grading a submission.
    The runner's own work per submission (unpacking the graded folder, the gradebook merge) is
    measured too: it is serial, so it bounds the throughput of a big cluster.
(c) One submission that trains (tests/fixtures/submissions/perfect) graded on the cluster, for
    the per-submission cost of the real course; with (a) and (b), a model of how long 2,000
    students take on N nodes of 16 cores. On a loaded machine, --submission-seconds S takes
    that cost from an earlier recorded measurement instead (say which in --cost-source), e.g.
    results/grading.txt's runner -j 2: 238.7 s for 4 submissions on 2 busy cores = 119.4 s of
    a worker per submission, parallel losses included.

The machine may be shared: the load average is recorded at the start and the end, and the
configurations alternate so that they see the same load. Not a test.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from coursekit.grading import runner  # noqa: E402
from coursekit.core.course import Course, grading_env  # noqa: E402
from daskcluster import LoopbackCluster  # noqa: E402  (the tests' cluster: dask scheduler / dask worker)

ASSIGNMENT = "week2"
SUBMISSIONS = REPO / "tests" / "fixtures" / "submissions"
CHEAP, TRAINS = "all-but-training", "perfect"
NODE_CORES = 16


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def fresh_course(base: Path, reference: str, students: list[str]) -> Course:
    shutil.rmtree(base, ignore_errors=True)
    course = Course.copy_of(base)
    course.generate(ASSIGNMENT)
    for student in students:
        course.submit(student, SUBMISSIONS / reference / ASSIGNMENT, ASSIGNMENT)
    return course


class Timed(runner.Runner):
    """The runner, with the time of its own per-submission work (commit) and the workers'."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.commit_seconds: list[float] = []
        self.grading_seconds: list[float] = []

    def commit(self, outcome, course):
        start = time.perf_counter()
        result = super().commit(outcome, course)
        self.commit_seconds.append(time.perf_counter() - start)
        if outcome.graded is not None:
            self.grading_seconds.append(outcome.graded.seconds)
        if not result.ok:
            sys.exit(f"{outcome.student} failed: {result.message}")
        return result


def grade(course: Course, **kwargs) -> tuple[float, Timed]:
    run = Timed(course.root, ASSIGNMENT, force=True, progress=False, threads=1, **kwargs)
    start = time.perf_counter()
    outcomes = run.run()
    elapsed = time.perf_counter() - start
    assert len(outcomes) == len(course.students(ASSIGNMENT)) and all(o.ok for o in outcomes)
    return elapsed, run


def dispatch_costs(cluster: LoopbackCluster, course: Course, samples: int) -> tuple[list[float], list[float]]:
    """Round trips of an empty task, and of a task that ships and checks a submission and the
    course files but runs no nbgrader."""
    from distributed import Client

    from coursekit.core import gradebook

    layout = course.layout
    student = course.students(ASSIGNMENT)[0]
    with gradebook.CourseGradebook(layout.db_url) as db, tempfile.TemporaryDirectory() as scratch, \
            Client(cluster.address, set_as_default=False) as client:
        files = runner.CourseFiles.of(layout, ASSIGNMENT, db.structure(), Path(scratch))
        held = client.submit(lambda c: c, files, pure=False)
        empty, shipped = [], []
        for i in range(samples):
            start = time.perf_counter()
            client.submit(int, i, pure=False).result()
            empty.append(time.perf_counter() - start)
            start = time.perf_counter()
            task = runner.SubmissionTask.of(layout, student, ASSIGNMENT, db.rows(student, ASSIGNMENT), 1)
            client.submit(_ship_only, held, task, pure=False).result()
            shipped.append(time.perf_counter() - start)
    return empty, shipped


def _ship_only(course, task) -> int:
    """On the worker: everything grade_submission does before nbgrader (unpack, check, hash)."""
    from distributed import get_worker

    work = Path(tempfile.mkdtemp(dir=get_worker().local_directory))
    try:
        private = runner.check_worker(course, work / "course")
        folder = private.submitted(task.student, course.assignment)
        runner.unpack(task.archive, folder)
        assert runner.tree_digest(folder, ["."]) == task.digest
        return len(task.archive)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-k", type=int, default=4, help="submissions per configuration (default 4)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--samples", type=int, default=30, help="round trips measured in (b)")
    parser.add_argument("--no-training", action="store_true", help="skip (c)")
    parser.add_argument("--submission-seconds", type=float,
                        help="a worker's seconds per training submission, recorded earlier (skips measuring (c))")
    parser.add_argument("--shared", action="store_true",
                        help="say in the output that others were loading the machine (compare only side by side)")
    parser.add_argument("--cost-source", default="", help="where --submission-seconds was measured")
    args = parser.parse_args()
    students = [f"s{i:02d}" for i in range(args.k)]
    lines = [f"cluster benchmark: {args.k} x {CHEAP} per configuration, {args.rounds} round(s); "
             f"{'shared machine, ' if args.shared else ''}"
             f"{runner.cores()} cores; load average at start {load()} (1, 5, 15 min)"]
    print(lines[0], flush=True)
    times: dict[str, list[float]] = {}
    grading: dict[str, list[float]] = {}
    commits: list[float] = []
    with tempfile.TemporaryDirectory(prefix="coursekit-bench-") as tmp:
        tmp = Path(tmp)
        course = fresh_course(tmp / "course", CHEAP, students)
        with LoopbackCluster(tmp / "dask", env=grading_env()) as cluster:
            cluster.add_worker("w1")
            configs = [("local runner -j 1", dict(jobs=1), 1), ("Dask, 1 worker", dict(scheduler=cluster.address), 1),
                       ("local runner -j 2", dict(jobs=2), 2), ("Dask, 2 workers", dict(scheduler=cluster.address), 2)]
            for _ in range(args.rounds):
                for name, kwargs, workers in configs:
                    while "scheduler" in kwargs and len(cluster.workers) < workers:
                        cluster.add_worker(f"w{len(cluster.workers) + 1}")
                    while "scheduler" in kwargs and len(cluster.workers) > workers:
                        cluster.remove_worker()
                    elapsed, run = grade(course, **kwargs)
                    times.setdefault(name, []).append(elapsed)
                    grading.setdefault(name, []).extend(run.grading_seconds)
                    commits += run.commit_seconds
                    print(f"  {name}: {elapsed:.1f} s (load {load()})", flush=True)
            while len(cluster.workers) > 1:
                cluster.remove_worker()
            empty, shipped = dispatch_costs(cluster, course, args.samples)
            train_cost = None
            if not args.no_training and args.submission_seconds is None:
                trains = fresh_course(tmp / "trains", TRAINS, ["t00"])
                _, run = grade(trains, scheduler=cluster.address)
                train_cost = run.grading_seconds[0]
    lines.append("(a) throughput, same submissions, one TensorFlow thread each (wall time of the whole run):")
    for name, values in times.items():
        best = statistics.median(values)
        lines.append(f"    {name:20s} {best:7.1f} s  {args.k / best * 60:5.2f} submissions/min  "
                     f"(worker time per submission {statistics.median(grading[name]):.1f} s)")
    ratio1 = statistics.median(times["Dask, 1 worker"]) / statistics.median(times["local runner -j 1"])
    ratio2 = statistics.median(times["Dask, 2 workers"]) / statistics.median(times["local runner -j 2"])
    lines.append(f"    Dask / local: {ratio1:.3f} with 1 worker, {ratio2:.3f} with 2 workers")
    per_sub = statistics.median([g for name in times for g in grading[name]])
    e, s, c = statistics.median(empty), statistics.median(shipped), statistics.median(commits)
    lines.append("(b) per submission (medians):")
    lines.append(f"    worker grading one submission (nbgrader autograde in the sandbox): {per_sub:.2f} s")
    lines.append(f"    empty task round trip: {e * 1000:.1f} ms; shipping and checking a submission with the "
                 f"course files: {s * 1000:.1f} ms")
    lines.append(f"    scheduling cost = round trip + shipping = {(e + s) * 1000:.1f} ms = "
                 f"{(e + s) / per_sub * 100:.2f} % of a submission (target < 5 %)")
    lines.append(f"    the runner's own work (unpack the graded folder, merge into the gradebook): {c * 1000:.1f} ms, "
                 f"serial: at most {1 / c:.0f} submissions/s for the whole cluster")
    speedup = statistics.median(times["Dask, 1 worker"]) / statistics.median(times["Dask, 2 workers"])
    efficiency = min(1.0, speedup / 2)
    lines.append(f"    2 workers vs 1 on the cluster: {speedup:.2f} times faster (parallel efficiency {efficiency:.2f} "
                 f"on {runner.cores()} cores)")
    if args.submission_seconds is not None:
        train_cost = args.submission_seconds
        efficiency = 1.0  # the recorded cost was measured with every core busy: its losses are in it
        lines.append(f"(c) one submission that trains ({TRAINS}): {train_cost:.1f} s of a worker, recorded earlier, "
                     f"not measured in this run ({args.cost_source or 'source not given'})")
    elif train_cost is not None:
        lines.append(f"(c) one submission that trains ({TRAINS}), graded on the cluster: {train_cost:.1f} s of a worker")
    if train_cost is not None:
        lines.append(f"    model: 2,000 students on N nodes of {NODE_CORES} cores, one worker process per core "
                     f"(3 GB each), efficiency {efficiency:.2f}, per submission {train_cost:.0f} s + "
                     f"{(e + s) * 1000:.0f} ms scheduling, the runner merging {1 / c:.0f}/s:")
        for nodes in (1, 2, 4, 8, 16, 32):
            workers = nodes * NODE_CORES
            rounds = math.ceil(2000 / workers)
            compute = rounds * (train_cost + e + s) / efficiency
            total = max(compute, 2000 * c)
            lines.append(f"    N = {nodes:2d}: {workers:3d} workers, {rounds:3d} submissions each: "
                         f"{total / 60:6.1f} min")
    lines.append(f"load average at the end {load()}")
    print("\n".join(lines[1:]))
    out = REPO / "benchmarks" / "results" / "cluster.txt"
    out.write_text("\n".join(lines) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
