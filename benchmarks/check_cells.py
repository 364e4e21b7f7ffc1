"""Where the check cells' time goes, in the checker kernel, per check cell and per kind (issue 14).
results/check_cells.txt holds a recorded run.

    .venv/bin/python benchmarks/check_cells.py [--rounds 1] [--notebooks mnist.ipynb ...] [--modes on off]

Each round runs the two source notebooks (the solutions plus every public and hidden check: what
autograde runs for a perfect submission) as the course executes them, SplitExecute with
nbgrader_config.py (sandbox included), once with the checker's memo of forward passes and scaled
data sets on and once off (``COURSEKIT_CHECK_CACHE=0``, coursekit/student/checks.py), alternating, so that
both modes see the same machine load. Per check cell it times:

- export: the student's kernel writing the values the cell reads (coursekit/transfer/export.py);
- load: the checker decoding them (coursekit/transfer/checker.py, coursekit/transfer/wire.py);
- run: the cell in the checker, split by a profiler the checker's preamble installs: forward
  passes (``checks.forward``, float64 copy of the images and matmuls), the weights' float64
  copies (``checks.model_weights``), errors carried forward (``checks.images_used``/``rows_used``:
  float64 copies and comparisons), data loading (``datasets.load``), scaled data sets
  (``checks.scaled_images``), and the rest (the cell's own NumPy: ``x / 255.0`` in the cell,
  comparisons, figures).

Times are exclusive (a forward pass inside ``checks.accuracy`` counts as a forward pass once).
The student kernel's fits are not timed here (benchmarks/grading_profile.py does that). It is not
a test; a round takes ~3 minutes on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import nbformat
from traitlets.config.loader import PyFileConfigLoader

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from coursekit.student import checks  # noqa: E402
from coursekit.core.notebook import grade_id  # noqa: E402
from coursekit.transfer.split_execute import CHECKER_MODULE, DEFAULT_PREAMBLE, SplitExecute  # noqa: E402

NOTEBOOKS = ("fashion_mnist.ipynb", "mnist.ipynb")
SOURCE = REPO / "source" / "week2"

# What each timed function's own time is called (exclusive of the timed functions it calls).
KINDS = {
    ("checks", "forward"): "forward passes",
    ("checks", "model_weights"): "weights to float64",
    ("checks", "images_used"): "errors carried forward",
    ("checks", "rows_used"): "errors carried forward",
    ("checks", "scaled_images"): "scaled data sets",
    ("datasets", "load"): "data loading",
}

# Runs in the checker before the course's preamble: wraps the functions above (the check cells
# and the helpers look them up by module attribute at call time) and records their own time per
# check cell in __check_profile__, which the grader reads back before stopping the checker.
PROFILER = """
import time as _pt, functools as _pf
import coursekit.student.checks as _pc, coursekit.student.datasets as _pd
__check_profile__ = {"cell": None, "spans": [], "stack": []}
def _profiled(owner, name, kind):
    inner = getattr(owner, name, None)
    if inner is None:
        return
    @_pf.wraps(inner)
    def timed(*args, **kwargs):
        stack = __check_profile__["stack"]
        stack.append(0.0)
        start = _pt.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            total = _pt.perf_counter() - start
            children = stack.pop()
            if stack:
                stack[-1] += total
            __check_profile__["spans"].append((__check_profile__["cell"], kind, total - children))
    setattr(owner, name, timed)
""" + "".join(f"_profiled(_p{module[0]}, {name!r}, {kind!r})\n" for (module, name), kind in KINDS.items())


class ProfiledSplitExecute(SplitExecute):
    """SplitExecute that times each check cell's export, load and run, and reads the checker's
    profile back before the checker stops."""

    async def _async_split_preprocess(self):
        self.cells: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.spans: list = []
        self._current = None
        return await super()._async_split_preprocess()

    async def _run_check(self, cell, index):
        self._current = grade_id(cell)
        await self._request(self._checker_km, self._checker_kc,
                            f"__check_profile__['cell'] = {self._current!r}", time.monotonic() + 60)
        try:
            return await super()._run_check(cell, index)
        finally:
            self._current = None

    async def _student_request(self, code, deadline):
        start = time.perf_counter()
        try:
            return await super()._student_request(code, deadline)
        finally:
            if self._current is not None:
                self.cells[self._current]["export"] += time.perf_counter() - start

    async def _request(self, km, kc, code, deadline):
        start = time.perf_counter()
        try:
            return await super()._request(km, kc, code, deadline)
        finally:
            if self._current is not None and code.startswith(f"{CHECKER_MODULE}.load("):
                self.cells[self._current]["load"] += time.perf_counter() - start

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        start = time.perf_counter()
        try:
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        finally:
            if self._current is not None:
                self.cells[self._current]["run"] += time.perf_counter() - start

    async def _stop_checker(self):
        if self._checker_kc is not None:
            dump = self._transfer.checker / "profile.json"
            code = f"open({str(dump)!r}, 'w').write(__import__('json').dumps(__check_profile__['spans']))"
            if await self._request(self._checker_km, self._checker_kc, code, time.monotonic() + 60) is None:
                self.spans += json.loads(dump.read_text())
        await super()._stop_checker()


def profile_notebook(path: Path, work: Path, cache: bool) -> tuple[dict, list]:
    """(grade id -> {export, load, run, <kind>...} seconds, failed check cells) for one notebook."""
    config = PyFileConfigLoader("nbgrader_config.py", path=str(REPO)).load_config()
    config.SplitExecute.checker_preamble = PROFILER + DEFAULT_PREAMBLE
    os.environ[checks.CACHE_ENV] = "" if cache else "0"
    try:
        pp = ProfiledSplitExecute(config=config)
        nb, _ = pp.preprocess(nbformat.read(path, as_version=4), {"metadata": {"path": str(work)}})
    finally:
        os.environ.pop(checks.CACHE_ENV, None)
    failed = [grade_id(c) for c in nb.cells if grade_id(c) in pp.cells
              and any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    cells = {gid: dict(times) for gid, times in pp.cells.items()}
    for gid, kind, seconds in pp.spans:
        if gid in cells:
            cells[gid][kind] = cells[gid].get(kind, 0.0) + seconds
    for times in cells.values():
        times["rest of run"] = max(0.0, times["run"] - sum(v for k, v in times.items() if k in KINDS.values()))
    return cells, failed


COLUMNS = ("export", "load", "run", *dict.fromkeys(KINDS.values()), "rest of run")


def report(label: str, cells: dict) -> dict[str, float]:
    print(f"\n  {label}: seconds per check cell (run = the columns after it)")
    print(f"    {'check cell':<22}" + "".join(f"{c[:12]:>13}" for c in COLUMNS))
    totals = defaultdict(float)
    for gid, times in cells.items():
        if times.get("run", 0) + times.get("load", 0) + times.get("export", 0) < 0.05:
            for c in COLUMNS:
                totals[c] += times.get(c, 0.0)
            continue
        print(f"    {gid:<22}" + "".join(f"{times.get(c, 0.0):13.2f}" for c in COLUMNS))
        for c in COLUMNS:
            totals[c] += times.get(c, 0.0)
    print(f"    {'all check cells':<22}" + "".join(f"{totals[c]:13.2f}" for c in COLUMNS))
    return dict(totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of cache off and on (default 1)")
    parser.add_argument("--notebooks", nargs="+", default=list(NOTEBOOKS))
    parser.add_argument("--modes", nargs="+", default=["off", "on"], choices=["off", "on"],
                        help="checker memo off (COURSEKIT_CHECK_CACHE=0) and/or on, in this order each round")
    args = parser.parse_args()
    print(f"check cells profile (issue 14): source/week2 notebooks, checker kernel, sandbox; {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f} at start", flush=True)
    totals = defaultdict(list)  # mode -> per-round totals over both notebooks
    with tempfile.TemporaryDirectory(prefix="check-cells-") as tmp:
        work = Path(tmp) / "work"
        shutil.copytree(SOURCE, work)
        for r in range(args.rounds):
            for mode in args.modes:
                merged: dict = {}
                failures = []
                for name in args.notebooks:
                    cells, failed = profile_notebook(work / name, work, cache=mode == "on")
                    merged.update({f"{name.split('.')[0][:2]}/{gid}": t for gid, t in cells.items()})
                    failures += failed
                if failures:
                    sys.exit(f"check cells failed with the checker memo {mode}: {failures}")
                totals[mode].append(report(f"round {r + 1}, checker memo {mode} "
                                           f"(load average {os.getloadavg()[0]:.2f})", merged))
    print(f"\nsummary, {args.rounds} round(s) alternating, medians over rounds, seconds for both notebooks' check cells:")
    print(f"    {'memo':<22}" + "".join(f"{c[:12]:>13}" for c in COLUMNS) + f"{'export+load+run':>17}")
    for mode, rounds in totals.items():
        med = {c: statistics.median(t.get(c, 0.0) for t in rounds) for c in COLUMNS}
        whole = statistics.median(t["export"] + t["load"] + t["run"] for t in rounds)
        print(f"    {mode:<22}" + "".join(f"{med[c]:13.2f}" for c in COLUMNS) + f"{whole:17.2f}")
    print("    every check cell passed in every mode")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
