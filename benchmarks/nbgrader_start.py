"""Starting nbgrader: the `nbgrader` command against coursekit.core.nbgrader_command, side by side
(issue 14). results/nbgrader_start.txt holds a recorded run.

    .venv/bin/python benchmarks/nbgrader_start.py [--rounds 5]

Each round runs `nbgrader --version` (which imports the whole application, as `autograde` does)
both ways, alternating; medians. The runner starts nbgrader once per graded submission.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from coursekit.core import nbgrader_command  # noqa: E402

WAYS = {"nbgrader (the command)": [str(Path(sys.executable).with_name("nbgrader"))],
        "coursekit.core.nbgrader_command": nbgrader_command.command()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"nbgrader start benchmark: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    times = {name: [] for name in WAYS}
    with tempfile.TemporaryDirectory() as cwd:
        for _ in range(args.rounds):
            for name, prefix in WAYS.items():
                start = time.perf_counter()
                subprocess.run([*prefix, "--version"], cwd=cwd, check=True, capture_output=True)
                times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        print(f"  {name:28s} {statistics.median(values):5.2f} s  ({', '.join(f'{v:.2f}' for v in values)})")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
