"""Grading a class: stock sequential nbgrader without sandbox vs the class runner with the sandbox,
and the per-submission cost of the sandbox. results/grading.txt holds a recorded run.

    .venv/bin/python benchmarks/grading.py [-k 4] [--rounds 2] [--jobs N] [--class-rounds 3] [--class-only]

(a) K copies of the reference submission (tests/fixtures/submissions/perfect), graded by plain
    `nbgrader autograde week2`, one after the other, as stock nbgrader grades: nbgrader's own
    Execute (no checker kernel), the stock `python3` kernel (no training speed-up of
    coursekit/execution/fastfit.py), no sandbox. The course's other settings (time limits, the stderr
    pattern, intake) stay, so that both courses give the perfect score.
(b) The same K submissions graded by `python -m coursekit.grading.runner week2` (default workers for
    this machine), every kernel in the sandbox. (a) and (b) alternate --class-rounds times (the
    same two courses graded again with --force); the ratio is that of the medians.
(c) Overhead: one reference submission graded by `nbgrader autograde --student`, alternately
    without and with the sandbox (same course, same notebooks, one at a time), --rounds times
    each; the overhead is the difference of the medians.

Every run must give the perfect score, or the benchmark stops: a fast wrong grading is no result.
This trains 2 models per submission and takes roughly (2K + 2 rounds) x 100 s on an idle 2-core
machine; it is not a test.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from coursekit.grading import runner  # noqa: E402
from coursekit.core.course import Course, grading_env  # noqa: E402

ASSIGNMENT = "week2"
REFERENCE = REPO / "tests" / "fixtures" / "submissions" / "perfect" / ASSIGNMENT


def course_with(base: Path, students: list[str], sandbox: bool, stock: bool = False) -> Course:
    course = Course.copy_of(base)
    course.generate(ASSIGNMENT)
    with open(course.root / "nbgrader_config.py", "a") as f:
        f.write("\n# benchmark\nfrom coursekit.execution.sandbox import Settings as _S\n"
                f"SANDBOX = _S(enabled={sandbox})\nc.Execute.extra_arguments = SANDBOX.kernel_arguments()\n")
        if stock:
            f.write("c.SplitExecute.split = False\nc.Execute.kernel_name = 'python3'\nc.Execute.extra_arguments = []\n")
    for student in students:
        course.submit(student, REFERENCE, ASSIGNMENT)
    return course


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=grading_env(), capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed


def check_perfect(course: Course, students: list[str]) -> None:
    with sqlite3.connect(course.layout.gradebook_path) as db:
        for student in students:
            score, best = db.execute(
                "SELECT SUM(g.auto_score), SUM(gc.max_score) FROM grade g JOIN grade_cells gc ON g.cell_id = gc.id "
                "JOIN submitted_notebook sn ON g.notebook_id = sn.id JOIN submitted_assignment sa ON "
                "sn.assignment_id = sa.id WHERE sa.student_id = ? AND gc.cell_type = 'code'", (student,)).fetchone()
            if score is None or abs(score - best) > 1e-9:
                sys.exit(f"{student} scored {score} of {best} in {course.root}: the grading is wrong, no result")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-k", type=int, default=4, help="copies of the reference submission (default 4)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the overhead measurement (default 2)")
    parser.add_argument("--jobs", type=int, default=None, help="runner workers (default: the runner's own choice)")
    parser.add_argument("--class-rounds", type=int, default=1,
                        help="alternating rounds of (a) and (b), the same courses graded again with --force (default 1)")
    parser.add_argument("--class-only", action="store_true", help="(a) and (b) only, no (c)")
    args = parser.parse_args()
    nbgrader = str(Path(sys.executable).with_name("nbgrader"))
    students = [f"ref-{i:02d}" for i in range(1, args.k + 1)]
    jobs = args.jobs or runner.default_jobs()
    print(f"grading benchmark: {args.k} copies of tests/fixtures/submissions/perfect (2 notebooks, 2 trainings each); "
          f"{runner.cores()} cores, {runner.available_memory() / 2**30:.0f} GB free; "
          f"load average {os.getloadavg()[0]:.2f} at start", flush=True)
    with tempfile.TemporaryDirectory(prefix="grading-bench-") as tmp:
        tmp = Path(tmp)
        stock = course_with(tmp / "stock", students, sandbox=False, stock=True)
        ours = course_with(tmp / "runner", students, sandbox=True)
        runs = {"stock": [], "runner": []}
        for round_ in range(args.class_rounds):
            again = ["--force"] if round_ else []
            a = timed([nbgrader, "autograde", ASSIGNMENT, *again], stock.root)
            check_perfect(stock, students)
            b = timed([sys.executable, "-m", "coursekit.grading.runner", ASSIGNMENT, "-j", str(jobs), "--no-progress", *again], ours.root)
            check_perfect(ours, students)
            runs["stock"].append(a)
            runs["runner"].append(b)
            print(f"  class round {round_ + 1}: stock {a:.1f} s, runner {b:.1f} s ({a / b:.2f}x)", flush=True)
        a, b = statistics.median(runs["stock"]), statistics.median(runs["runner"])
        rounds = f"median of {args.class_rounds} alternating round(s)"
        print(f"(a) stock nbgrader autograde, sequential:        {a:7.1f} s  ({a / args.k:.1f} s per submission; {rounds})", flush=True)
        print(f"(b) coursekit.grading.runner -j {jobs}, sandboxed:              {b:7.1f} s  ({b / args.k:.1f} s per submission)", flush=True)
        print(f"    (a) / (b) = {a / b:.2f}  ({'b is faster' if b < a else 'b is slower'})", flush=True)
        if args.class_only:
            print(f"load average {os.getloadavg()[0]:.2f} at the end")
            return

        bare, boxed = course_with(tmp / "bare", ["ref"], False), course_with(tmp / "boxed", ["ref"], True)
        times = {"bare": [], "sandbox": []}
        for _ in range(args.rounds):
            for name, course in (("bare", bare), ("sandbox", boxed)):
                times[name].append(timed([nbgrader, "autograde", ASSIGNMENT, "--student", "ref", "--force"], course.root))
                check_perfect(course, ["ref"])
        med = {k: statistics.median(v) for k, v in times.items()}
        fmt = lambda v: ", ".join(f"{t:.1f}" for t in v)
        print(f"(c) one submission, sequential, {args.rounds} rounds alternating: without sandbox {med['bare']:.1f} s "
              f"({fmt(times['bare'])}), with sandbox {med['sandbox']:.1f} s ({fmt(times['sandbox'])})")
        print(f"    sandbox overhead per submission: {med['sandbox'] - med['bare']:+.1f} s "
              f"({(med['sandbox'] - med['bare']) / med['bare'] * 100:+.1f} %)")
        start = time.perf_counter()
        from coursekit.execution import sandbox
        sandbox._checked.clear()
        sandbox.check()
        print(f"    fixed cost of one sandbox start (bwrap + setpriv + python): {time.perf_counter() - start:.3f} s, "
              f"twice per submission (one kernel per notebook)")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
