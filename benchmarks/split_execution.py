"""Cost of running check cells in a checker kernel: one submission graded with the split design
and with the single-kernel design, side by side. Record a run on a quiet machine in
results/split_execution.txt.

    .venv/bin/python benchmarks/split_execution.py [--rounds 3]

The reference submission (tests/fixtures/submissions/perfect: 2 notebooks, 2 trainings) is graded
by `nbgrader autograde week2 --student X` in one course copy, alternately with the course's
configuration (check cells in the checker kernel, values handed over as data) and with
`--SplitExecute.split=False` (every cell in the student's kernel, as before issue 10; the
sandbox is on in both). The order alternates within each round (ABBA...) so that a drift of the
machine's load affects both alike. Reported: the median per-submission time of each design, their
difference, and the largest resident memory the checker kernel reached. Every run must give the
perfect score, or the benchmark stops. Roughly 2 x rounds x 100 s on an idle 2-core machine; not
a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from grading import ASSIGNMENT, REFERENCE, check_perfect, timed  # noqa: E402

from coursekit.core.course import Course  # noqa: E402


class CheckerMemory:
    """Samples the resident memory of checker kernels (command line names coursekit.transfer.checker)."""

    def __init__(self):
        self.peak = 0
        self.running = True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while self.running:
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                        if b"coursekit.transfer.checker" not in f.read():
                            continue
                    with open(f"/proc/{entry.name}/statm") as f:
                        self.peak = max(self.peak, int(f.read().split()[1]) * page)
                except (OSError, ValueError, IndexError):
                    pass
            time.sleep(0.25)

    def stop(self) -> int:
        self.running = False
        self.thread.join()
        return self.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="gradings of each design (default 3)")
    args = parser.parse_args()
    nbgrader = str(Path(sys.executable).with_name("nbgrader"))
    print(f"split execution benchmark: tests/fixtures/submissions/perfect (2 notebooks, 2 trainings), "
          f"{args.rounds} rounds; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at start", flush=True)
    designs = {"single": ["--SplitExecute.split=False"], "split": []}
    times: dict[str, list[float]] = {name: [] for name in designs}
    with tempfile.TemporaryDirectory(prefix="bench-split-") as tmp:
        course = Course.copy_of(Path(tmp) / "course")
        course.generate(ASSIGNMENT)
        order = []
        for r in range(args.rounds):
            order += [("single", r), ("split", r)] if r % 2 == 0 else [("split", r), ("single", r)]
        for name, r in order:
            course.submit(f"{name}-{r}", REFERENCE, ASSIGNMENT)
        memory = CheckerMemory()
        for name, r in order:
            student = f"{name}-{r}"
            elapsed = timed([nbgrader, "autograde", "week2", "--student", student, *designs[name]], course.root)
            check_perfect(course, [student])
            times[name].append(elapsed)
            print(f"  round {r + 1}: {name:6} {elapsed:6.1f} s", flush=True)
        peak = memory.stop()
    single, split = statistics.median(times["single"]), statistics.median(times["split"])
    runs = lambda name: ", ".join(f"{t:.1f}" for t in times[name])  # noqa: E731
    print(f"single kernel (checks beside student code): median {single:.1f} s per submission ({runs('single')})")
    print(f"split (checks in the checker kernel):       median {split:.1f} s per submission ({runs('split')})")
    print(f"difference: {split - single:+.1f} s ({100 * (split - single) / single:+.1f} %)")
    print(f"checker kernel: largest resident memory {peak / 2**20:.0f} MB")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
