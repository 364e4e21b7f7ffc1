"""Where grading one submission spends its time, and grading vs running the notebooks bare.
results/grading_profile.txt holds a recorded run (issue 14).

    .venv/bin/python benchmarks/grading_profile.py [--rounds 1] [--profile-only | --side-by-side-only] [--memo] [--skip-off]

(1) Profile by stage: the two source notebooks (the solutions plus every public and hidden check:
    what autograde executes for a perfect submission) run in the grading kernel, sandbox
    included, once with the default steps_per_execution of coursekit/execution/fastfit.py and once with it
    off (COURSEKIT_FASTFIT=0). Stages: kernel start (TensorFlow import, checks and guard
    included; TensorFlow's import is also timed alone in a fresh Python), data loading (every
    coursekit.student.datasets split read, in student cells and in checks), each fit (Keras' training
    loop, from on_train_begin to on_train_end), predictions and evaluations, the check cells
    (less the data loading and forward passes they do), other student code (plots...).
    A first, ungraded cell of the profiler sets the timers up; it wraps CallbackList and
    coursekit.student.datasets._load_split, which the checks' tamper guard does not restore.
(2) Side by side, alternating, --rounds times: (a) `jupyter nbconvert --execute` of the perfect
    reference submission's two notebooks, stock `python3` kernel, no sandbox; (b) `nbgrader
    autograde --student` of the same submission, sandboxed, speed-up off; (c) the same with the
    speed-up. (b) and (c) must give the perfect score on every grade cell, identically, or the
    benchmark stops. nbgrader's own bookkeeping is (c) less the profiled notebook time of (1);
    feedback is `nbgrader generate_feedback --student` after (c). With --memo, (d) is (c) with the
    exact memo of seeded fits on (coursekit/execution/fitmemo.py, issue 28; build its store first:
    `python -m coursekit.grading.fitmemo_build build`), and (c) runs with it off; --skip-off leaves (b) out.

Every run here is sequential. (a) uses TensorFlow's default threads (all cores), as a student's
own Jupyter does; (b) and (c) the grading kernel's one thread (coursekit/execution/kernel.py), so the
speed-up (b) turns off is steps per execution alone. It is not a test; it takes ~10 minutes on
a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grading import ASSIGNMENT, REFERENCE, REPO, check_perfect, course_with, timed  # noqa: E402

from coursekit.execution import fastfit, fitmemo
from coursekit.grading import runner  # noqa: E402
from coursekit.core.course import grading_env  # noqa: E402
from coursekit.execution.kernel import GRADER_KERNEL  # noqa: E402
from coursekit.core.layout import CourseLayout  # noqa: E402
from coursekit.core.notebook import cell_name, grade_id, is_check_cell  # noqa: E402

NOTEBOOKS = ("fashion_mnist.ipynb", "mnist.ipynb")

# The profiler's own first cell: timers on what the tamper guard leaves alone (see docstring).
TIMERS = r"""
import time as _t, keras as _k, coursekit.student.datasets as _ds
__profile__, _depth = [], [0]
def _cell():  # the running cell's In[] number: IPython has already counted it
    return get_ipython().execution_count - 1
def _span(begin, end, kind):
    cls = _k.callbacks.CallbackList
    b0, e0 = getattr(cls, begin), getattr(cls, end)
    def b(self, logs=None):
        _depth[0] += 1; setattr(self, "_t_" + kind, _t.perf_counter()); return b0(self, logs)
    def e(self, logs=None):
        _depth[0] -= 1
        if _depth[0] == 0:  # outermost only: a fit's validation stays in the fit
            __profile__.append((_cell(), kind, _t.perf_counter() - getattr(self, "_t_" + kind)))
        return e0(self, logs)
    setattr(cls, begin, b); setattr(cls, end, e)
_span("on_train_begin", "on_train_end", "fit")
_span("on_test_begin", "on_test_end", "evaluate")
_span("on_predict_begin", "on_predict_end", "predict")
def _timed(split):
    def timed_split(*a, **k):
        s = _t.perf_counter()
        try: return split(*a, **k)
        finally: __profile__.append((_cell(), "load", _t.perf_counter() - s))
    return timed_split
_ds._load_split = _timed(_ds._load_split)
"""


def profile_notebook(path: Path, fast: bool) -> dict[str, float]:
    """Seconds per stage for one notebook in the grading kernel."""
    nb = nbformat.read(path, as_version=4)
    probe = nbformat.v4.new_code_cell("import json; print(json.dumps(__profile__))")
    nb.cells = [nbformat.v4.new_code_cell(TIMERS), *nb.cells, probe]
    os.environ[fastfit.ENV] = "" if fast else "0"
    client = NotebookClient(nb, kernel_name=GRADER_KERNEL, timeout=1200, startup_timeout=600,
                            resources={"metadata": {"path": str(path.parent)}})
    stages: dict[str, float] = defaultdict(float)
    cells = {}  # execution count -> (name, is check, seconds)
    client.reset_execution_trackers()
    start = time.perf_counter()
    with client.setup_kernel():
        stages["kernel start (TF import, checks, guard)"] = time.perf_counter() - start
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            began = time.perf_counter()
            client.execute_cell(cell, index)
            if 0 < index < len(nb.cells) - 1:
                cells[cell.execution_count] = (cell_name(cell, index - 1), is_check_cell(cell),
                                               time.perf_counter() - began)
    os.environ.pop(fastfit.ENV, None)
    spans = json.loads("".join(o.get("text", "") for o in probe.outputs if o.output_type == "stream"))
    inside = defaultdict(float)  # execution count -> seconds of timed spans
    for count, kind, seconds in spans:
        name, check, _ = cells.get(count, ("?", False, 0.0))
        if kind == "load":
            label = "data loading (in checks)" if check else "data loading (student cells)"
        elif kind == "fit":
            label = f"fit: {name}"
        else:
            label = f"{kind} (in checks)" if check else f"{kind} (student cells)"
        stages[label] += seconds
        inside[count] += seconds
    for count, (name, check, seconds) in cells.items():
        rest = max(0.0, seconds - inside[count])
        stages["check cells (the rest)" if check else "other student code (plots, set-up...)"] += rest
    stages["total (kernel start + cells)"] = time.perf_counter() - start
    return dict(stages)


def tf_import_seconds() -> float:
    code = "import time; s = time.perf_counter(); import tensorflow, keras; print(time.perf_counter() - s)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=grading_env())
    return float(out.stdout.strip().splitlines()[-1])


def grade_scores(course, student: str) -> dict[str, float]:
    import sqlite3

    with sqlite3.connect(course.layout.gradebook_path) as db:
        rows = db.execute(
            "SELECT n.name || '/' || bc.name, g.auto_score FROM grade g JOIN grade_cells gc ON g.cell_id = gc.id "
            "JOIN base_cell bc ON bc.id = gc.id JOIN submitted_notebook sn ON g.notebook_id = sn.id "
            "JOIN notebook n ON sn.notebook_id = n.id JOIN submitted_assignment sa ON "
            "sn.assignment_id = sa.id WHERE sa.student_id = ? AND gc.cell_type = 'code'", (student,)).fetchall()
    return dict(rows)


def bare_nbconvert(folder: Path, out: Path) -> float:
    jupyter = str(Path(sys.executable).with_name("jupyter"))
    start = time.perf_counter()
    for name in NOTEBOOKS:
        subprocess.run([jupyter, "nbconvert", "--execute", "--to", "notebook", "--output-dir", str(out),
                        "--ExecutePreprocessor.kernel_name=python3", "--ExecutePreprocessor.timeout=-1",
                        str(folder / name)], cwd=folder, env=grading_env(), check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of (a), (b), (c) (default 1)")
    parser.add_argument("--profile-only", action="store_true", help="stage profile (1) only, no side by side (2)")
    parser.add_argument("--side-by-side-only", action="store_true", help="(2) only: no stage profile (1)")
    parser.add_argument("--notebooks", nargs="+", default=list(NOTEBOOKS), help="notebooks to profile (default both)")
    parser.add_argument("--memo", action="store_true",
                        help="(2) with (d): speed-up and the fit memo on (coursekit/execution/fitmemo.py; its store must be "
                             "built: python -m coursekit.grading.fitmemo_build build); (c) then runs with the memo off")
    parser.add_argument("--skip-off", action="store_true", help="(2) without (b), the speed-up off")
    args = parser.parse_args()
    cores = runner.cores()
    print(f"grading profile (issue 14): tests/fixtures/submissions/perfect; {cores} cores, "
          f"load average {os.getloadavg()[0]:.2f} at start; fastfit default steps_per_execution "
          f"{fastfit.DEFAULT_STEPS_PER_EXECUTION}", flush=True)
    if args.side_by_side_only:
        side_by_side(args.rounds, cores, notebooks_fast=None, memo=args.memo, skip_off=args.skip_off)
        return
    tf_import = tf_import_seconds()

    source = CourseLayout.load(REPO).source(ASSIGNMENT)
    profiles = {}
    for fast in (False, True):
        profiles[fast] = [profile_notebook(source / name, fast) for name in args.notebooks]
    print("\n(1) per-stage profile, seconds (source notebooks = solutions + all checks, grading kernel, sandbox)")
    print(f"    TensorFlow + Keras import alone, fresh Python: {tf_import:.1f} s (part of every kernel start)")
    for i, name in enumerate(args.notebooks):
        print(f"  {name}:{'speed-up off':>52}{'speed-up on':>13}")
        labels = list(dict.fromkeys([*profiles[False][i], *profiles[True][i]]))
        labels.sort(key=lambda s: (s.startswith("total"), -profiles[False][i].get(s, 0)))
        for label in labels:
            off, on = profiles[False][i].get(label, 0.0), profiles[True][i].get(label, 0.0)
            print(f"    {label:<52}{off:9.1f}{on:13.1f}")
    notebooks_fast = sum(p["total (kernel start + cells)"] for p in profiles[True])
    fits = {fast: sum(v for p in profiles[fast] for k, v in p.items() if k.startswith("fit:")) for fast in profiles}
    print(f"  all fits: {fits[False]:.1f} s -> {fits[True]:.1f} s ({fits[False] / fits[True]:.2f}x faster)", flush=True)
    if args.profile_only:
        return
    side_by_side(args.rounds, cores, notebooks_fast, memo=args.memo, skip_off=args.skip_off)


def side_by_side(rounds: int, cores: int, notebooks_fast: float | None, memo: bool = False,
                 skip_off: bool = False) -> None:
    """(2): bare nbconvert, autograde with the speed-up off and on, alternating, ``rounds`` times."""
    nbgrader = str(Path(sys.executable).with_name("nbgrader"))
    times = defaultdict(list)
    feedback = []
    with tempfile.TemporaryDirectory(prefix="grading-profile-") as tmp:
        tmp = Path(tmp)
        courses = {"off": course_with(tmp / "off", ["ref"], sandbox=True),
                   "on": course_with(tmp / "on", ["ref"], sandbox=True)}
        if skip_off:
            del courses["off"]
        if memo:
            courses["memo"] = course_with(tmp / "memo", ["ref"], sandbox=True)
        reference = next(iter(courses))
        scores = {}
        shutil.copytree(REFERENCE, tmp / "bare")  # the notebooks may write files beside them
        for r in range(rounds):
            times["bare"].append(bare_nbconvert(tmp / "bare", tmp / f"bare-{r}"))
            for key, course in courses.items():
                os.environ[fastfit.ENV] = "0" if key == "off" else ""
                os.environ[fitmemo.ENV] = "" if key == "memo" else "0"
                times[key].append(timed([nbgrader, "autograde", ASSIGNMENT, "--student", "ref", "--force"], course.root))
                os.environ.pop(fastfit.ENV, None)
                os.environ.pop(fitmemo.ENV, None)
                check_perfect(course, ["ref"])
                scores.setdefault(key, grade_scores(course, "ref"))
                if scores[key] != grade_scores(course, "ref") or scores[key] != scores[reference]:
                    sys.exit(f"scores differ: {scores}")
            feedback.append(timed([nbgrader, "generate_feedback", ASSIGNMENT, "--student", "ref", "--force"],
                                  courses["on"].root))
            print(f"  round {r + 1}: bare {times['bare'][-1]:.1f} s, "
                  + ", ".join(f"grading {key} {times[key][-1]:.1f} s" for key in courses)
                  + f", load average {os.getloadavg()[0]:.2f}", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    fmt = lambda v: ", ".join(f"{t:.1f}" for t in v)
    print(f"\n(2) side by side, {rounds} round(s) alternating, medians:")
    print(f"  (a) jupyter nbconvert --execute, both notebooks, python3 kernel, no sandbox: {med['bare']:7.1f} s ({fmt(times['bare'])})")
    labels = {"off": "(b) nbgrader autograde --student, sandboxed, speed-up off:                ",
              "on": "(c) nbgrader autograde --student, sandboxed, speed-up on" + (", fit memo off:  " if memo else ":                 "),
              "memo": "(d) nbgrader autograde --student, sandboxed, speed-up on, fit memo on:   "}
    for key in med:
        if key in labels:
            print(f"  {labels[key]} {med[key]:7.1f} s ({fmt(times[key])})")
    print("  " + "   ".join(f"{labels[key][:3]}/(a) = {med[key] / med['bare']:.2f}" for key in labels if key in med)
          + "   (target: <= 0.35)" + (f"   (b)/(c) = {med['off'] / med['on']:.2f}" if "off" in med else "")
          + (f"   (c)/(d) = {med['on'] / med['memo']:.2f}" if "memo" in med else ""))
    print(f"  scores of {', '.join(labels[k][:3] for k in scores)}: identical on all {len(scores['on'])} grade cells, every one full marks")
    if notebooks_fast is not None:
        print(f"  nbgrader bookkeeping (c) less the profiled notebooks (speed-up on): {med['on'] - notebooks_fast:+.1f} s "
              f"(different runs: noisy)")
    print(f"  feedback, nbgrader generate_feedback --student: {statistics.median(feedback):.1f} s")
    best = med.get("memo", med["on"])
    per_core_hour = 3600 / best
    print(f"\n16-core estimate: each of the runner's workers trains with one TensorFlow thread; with one\n"
          f"worker per core (16 workers, 48 GB at 3 GB each) a submission costs at most\n"
          f"{cores} x {best:.0f} s = {best * cores:.0f} core-seconds as measured here (all {cores} cores, sequential), so\n"
          f"16 cores grade at least ~{16 * per_core_hour / cores:.0f} submissions an hour, a class of 100 in "
          f"~{100 * best * cores / 16 / 60:.0f} min.\n"
          f"This assumes grading scales with cores (training is per-step bound, one thread each); it is an\n"
          f"estimate from this machine, not a measurement on 16 cores.")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
