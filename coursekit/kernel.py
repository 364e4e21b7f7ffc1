"""The Jupyter kernel that nbgrader uses to run submissions: this environment's Python.

``nbgrader_config.py`` sets ``c.Execute.kernel_name = GRADER_KERNEL``, so every notebook
nbgrader executes (validate, autograde) runs in the kernel installed here, whatever kernel
the student's notebook names. The kernel:

- is ``sys.executable`` of the course's virtual environment;
- starts with ``-P`` (safe path): the submission folder is *not* on ``sys.path``, so a
  ``coursekit.py`` or ``numpy.py`` a student leaves there cannot stand in for the real one;
- imports ``coursekit.checks`` and installs its tamper guard before any cell runs, so the check
  helpers hold the genuine NumPy/Keras functions even if student code later redefines them, and
  what a cell redefines is put back before the next one;
- trains with a default ``steps_per_execution`` where that is exact (coursekit/fastfit.py);
- silences TensorFlow's C++ log lines, which would otherwise reach stderr and cost points;
- runs in the sandbox: the kernel command is started by ``python -I -m coursekit.sandbox``,
  which puts it in bubblewrap with no network, only a scratch copy of the submission's folder
  and resource limits (coursekit/sandbox.py; nbgrader_config.py, section "Sandbox", passes the
  limits or the explicit opt-out). The wrapper runs with ``-I``: the submission folder, its
  working directory, must not be able to stand in for ``coursekit.sandbox`` either. The kernel
  is interrupted by a message, not a signal: a signal would have to cross the sandbox.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

GRADER_KERNEL = "week2-grader"

KERNEL_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow's C++ logs go to fd 2, which ipykernel forwards as stderr
    "TF_ENABLE_ONEDNN_OPTS": "0",  # bit-reproducible CPU kernels, and no oneDNN banner
    "PYTHONHASHSEED": "0",
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    "PYTHONNOUSERSITE": "1",  # nothing from the grader's ~/.local
}

# Run before any cell: bind the genuine functions the checks use, and put them back before every cell.
# fastfit first: the guard then keeps its Model.fit in place (coursekit/fastfit.py).
PRELOAD = ("import coursekit.fastfit; coursekit.fastfit.install(); "
           "import coursekit.checks; coursekit.checks.install_guard(get_ipython())")


def kernel_spec(python: str | None = None) -> dict:
    python = python or sys.executable
    return {
        "argv": [
            python, "-I", "-m", "coursekit.sandbox", "--",  # the sandbox wrapper (see above)
            python, "-P", "-m", "ipykernel_launcher",
            "-f", "{connection_file}",
            f"--IPKernelApp.exec_lines={PRELOAD}",
        ],
        "display_name": "Week 2 grader (course environment)",
        "language": "python",
        "env": KERNEL_ENV,
        "interrupt_mode": "message",
        "metadata": {"debugger": False},
    }


def install(prefix: str | None = None) -> Path:
    """Write the kernel spec into ``<prefix>/share/jupyter/kernels`` (default: this venv)."""
    target = Path(prefix or sys.prefix) / "share" / "jupyter" / "kernels" / GRADER_KERNEL
    target.mkdir(parents=True, exist_ok=True)
    (target / "kernel.json").write_text(json.dumps(kernel_spec(), indent=1) + "\n")
    return target


if __name__ == "__main__":
    print(f"installed kernel '{GRADER_KERNEL}' in {install()}")
