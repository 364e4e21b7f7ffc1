"""The Jupyter kernels nbgrader uses: this environment's Python, for the student's code and
for the checks.

``nbgrader_config.py`` sets ``c.Execute.kernel_name = GRADER_KERNEL``, so every notebook
nbgrader executes (validate, autograde) runs in the kernel installed here, whatever kernel
the student's notebook names; its check cells run in ``CHECKER_KERNEL`` instead
(coursekit/transfer/split_execute.py). Both kernels:

- are ``sys.executable`` of the course's virtual environment;
- start with ``-P`` (safe path): the working directory is *not* on ``sys.path``, so a
  ``coursekit.py`` or ``numpy.py`` a student leaves in the submission folder cannot stand in
  for the real one;
- silence TensorFlow's C++ log lines, which would otherwise reach stderr and cost points;
- run in the sandbox, each in its own: the kernel command is started by ``python -I -m
  coursekit.execution.sandbox``, which puts it in bubblewrap with no network, a scratch copy of its
  working directory and resource limits (coursekit/execution/sandbox.py; nbgrader_config.py, section
  "Sandbox", passes the limits or the explicit opt-out). The wrapper runs with ``-I``: the
  submission folder, its working directory, must not be able to stand in for
  ``coursekit.execution.sandbox`` either. The kernel is interrupted by a message, not a signal: a signal
  would have to cross the sandbox.

Before any cell runs, the student's kernel installs the default ``steps_per_execution`` for
``fit`` where that trains exactly (coursekit/execution/fastfit.py; first, so that the guard then keeps its
``Model.fit`` in place; its ``fit`` also restores, instead of training, a fit whose every input a
trusted run recorded: coursekit/execution/fitmemo.py, whose store the sandbox mounts read-only), imports the grader's agent (``coursekit.transfer.export``, which hands values to
the checker) and installs the check helpers' guard, which keeps a library
redefinition to the cell that makes it (``coursekit.student.checks.install_guard``; no longer a defence:
the checks do not run there). The checker kernel imports ``coursekit.transfer.checker`` (NumPy, the check
helpers; not TensorFlow) when it starts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

GRADER_KERNEL = "week2-grader"
CHECKER_KERNEL = "week2-checker"
# Run before any cell in the student's kernel. fastfit first: the guard then keeps its Model.fit
# in place (coursekit/execution/fastfit.py); the guard puts back what a cell redefines before the next one.
PRELOAD = ("import coursekit.execution.fastfit; coursekit.execution.fastfit.install(); "
           "import coursekit.student.checks, coursekit.transfer.export; coursekit.student.checks.install_guard(get_ipython())")
CHECKER_PRELOAD = "import coursekit.transfer.checker"

KERNEL_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow's C++ logs go to fd 2, which ipykernel forwards as stderr
    "TF_ENABLE_ONEDNN_OPTS": "0",  # bit-reproducible CPU kernels, and no oneDNN banner
    # One TensorFlow thread, whatever the machine and however many submissions are graded at once:
    # the thread count changes how a matrix product is split, so the weights a fit trains (and a
    # grade near a threshold) would depend on the grader's cores and the runner's -j. One thread
    # is also the fastest for this model's small products (benchmarks/results/training_threads.txt).
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "PYTHONHASHSEED": "0",
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    "PYTHONNOUSERSITE": "1",  # nothing from the grader's ~/.local
}


def kernel_spec(python: str | None = None, checker: bool = False) -> dict:
    """The student's kernel, or (``checker``) the kernel that runs check cells."""
    python = python or sys.executable
    argv = [
        python, "-I", "-m", "coursekit.execution.sandbox", "--",  # the sandbox wrapper (see above)
        python, "-P", "-m", "ipykernel_launcher",
        "-f", "{connection_file}",
        f"--IPKernelApp.exec_lines={CHECKER_PRELOAD if checker else PRELOAD}",
    ]
    return {
        "argv": argv,
        "display_name": "Week 2 checker (course environment)" if checker else "Week 2 grader (course environment)",
        "language": "python",
        "env": KERNEL_ENV,
        "interrupt_mode": "message",
        "metadata": {"debugger": False},
    }


def install(prefix: str | None = None) -> list[Path]:
    """Write both kernel specs into ``<prefix>/share/jupyter/kernels`` (default: this venv)."""
    written = []
    for name, checker in ((GRADER_KERNEL, False), (CHECKER_KERNEL, True)):
        target = Path(prefix or sys.prefix) / "share" / "jupyter" / "kernels" / name
        target.mkdir(parents=True, exist_ok=True)
        (target / "kernel.json").write_text(json.dumps(kernel_spec(checker=checker), indent=1) + "\n")
        written.append(target)
    return written


if __name__ == "__main__":
    for path in install():
        print(f"installed kernel '{path.name}' in {path}")
