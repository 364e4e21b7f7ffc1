"""A course directory on disk, and nbgrader commands run in it.

Tests, the demo and the class runner all need "a copy of this course somewhere, with
these submissions, graded": this module is that one mechanism. Where things are inside the
course is ``coursekit.core.layout``'s business (``Course.layout``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from coursekit.core import nbgrader_command
from coursekit.core.layout import CourseLayout

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
# What a course copy needs from the repository (everything else is generated or student data).
COURSE_FILES = ("nbgrader_config.py", "jupyter_server_config.py", "source")


class NbgraderFailed(RuntimeError):
    pass


@dataclass
class Course:
    root: Path

    @classmethod
    def copy_of(cls, target: Path, repo: Path = REPO_ROOT) -> "Course":
        """A fresh course at ``target`` with this repository's config and source notebooks."""
        target.mkdir(parents=True, exist_ok=True)
        for name in COURSE_FILES:
            src = repo / name
            if src.is_dir():
                shutil.copytree(src, target / name, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
            else:
                shutil.copy2(src, target / name)
        (target / "gradebook").mkdir(exist_ok=True)
        return cls(target)

    @property
    def layout(self) -> CourseLayout:
        """Paths and configuration, read afresh (a test may have edited nbgrader_config.py)."""
        return CourseLayout.load(self.root)

    @property
    def db_url(self) -> str:
        return self.layout.db_url

    # --- running nbgrader ------------------------------------------------------------

    def nbgrader(self, *args: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
        """Run ``nbgrader <args>`` with this course as working directory."""
        cmd = [*nbgrader_command.command(), *args]
        proc = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, timeout=timeout,
                              env=grading_env())
        if check and proc.returncode != 0:
            raise NbgraderFailed(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
        return proc

    def sync_schedule(self) -> None:
        """Write the due dates of this course's nbgrader_config.py into its gradebook (in a process
        of its own: a new gradebook runs nbgrader's `alembic`, found on the grading PATH)."""
        subprocess.run([sys.executable, "-m", "coursekit.term.schedule"], cwd=self.root, check=True,
                       capture_output=True, env=grading_env())

    def generate(self, assignment: str) -> None:
        self.sync_schedule()
        self.nbgrader("generate_assignment", assignment, "--force")

    # --- submissions -----------------------------------------------------------------

    def submit(self, student: str, folder: Path, assignment: str) -> Path:
        """Copy a submission folder (notebooks, timestamp.txt, any other files) in place."""
        dest = self.layout.submitted(student, assignment)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(folder, dest)
        return dest

    def students(self, assignment: str) -> list[str]:
        return self.layout.students(assignment)


def grading_env() -> dict:
    """The environment nbgrader and its kernels run with: the course venv first on PATH, quiet
    TensorFlow. (The data folders need nothing here: coursekit.student.datapaths finds them.)"""
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env
