"""How long each source notebook takes to run top to bottom in the grading kernel, and its
slowest cells. The assignment promises "about a minute" per notebook on a 2-core machine;
results/notebook_runtime.txt holds a recorded run (with the machine's load at the time).

    .venv/bin/python benchmarks/notebook_runtime.py
"""

import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from coursekit.core.course import REPO_ROOT
from coursekit.execution.kernel import GRADER_KERNEL
from coursekit.core.layout import CourseLayout
from coursekit.core.notebook import cell_name

ASSIGNMENT = "week2"


def run(path: Path):
    nb = nbformat.read(path, as_version=4)
    timings = []

    class Timed(NotebookClient):
        async def async_execute_cell(self, cell, cell_index, **kwargs):
            start = time.perf_counter()
            result = await super().async_execute_cell(cell, cell_index, **kwargs)
            timings.append((time.perf_counter() - start, cell_name(cell, cell_index)))
            return result

    client = Timed(nb, kernel_name=GRADER_KERNEL, timeout=600, resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start, sorted(timings, reverse=True)


def main():
    print(f"kernel {GRADER_KERNEL}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores at start")
    for path in sorted(CourseLayout.load(REPO_ROOT).source(ASSIGNMENT).glob("*.ipynb")):
        total, timings = run(path)
        slowest = ", ".join(f"{gid} {t:.1f} s" for t, gid in timings[:4])
        print(f"{path.name}: {total:.1f} s top to bottom (kernel start included); slowest: {slowest}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
