"""The course on disk: where everything is, and what ``nbgrader_config.py`` says.

Every tool that is not nbgrader itself (the runner, the report, the summary, the schedule,
the tests and benchmarks) finds course folders and configuration here, never by joining
``root / "autograded" / student / assignment`` by hand:

    layout = CourseLayout.load("/path/to/course")     # reads nbgrader_config.py once
    layout.autograded("alice", "week2")               # Path, absolute
    layout.db_url                                     # absolute even if the config's is relative

Paths come from nbgrader's own ``CourseDirectory.format_path``, so a course that changes
``directory_structure`` or a step's folder name is followed everywhere. Inside a running
nbgrader command (the submission repairs), ``CourseLayout.of(coursedir)`` wraps that command's
``CourseDirectory``, command-line overrides included.

The config file is read with traitlets' ``PyFileConfigLoader``, from the course root, without
changing the working directory; a relative SQLite ``db_url`` is made absolute from the root.
"""

from __future__ import annotations

import glob
import os
import re
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from nbgrader.coursedir import CourseDirectory
from sqlalchemy.engine import make_url
from traitlets import Dict
from traitlets.config import Config, Configurable
from traitlets.config.loader import PyFileConfigLoader

CONFIG_FILE = "nbgrader_config.py"


class NotACourse(FileNotFoundError):
    """The folder has no nbgrader_config.py."""


class CourseSchedule(Configurable):
    """The course's due dates (``c.CourseSchedule.due_dates`` in nbgrader_config.py); nbgrader
    reads them from the gradebook, where ``coursekit.term.schedule`` writes them."""

    due_dates = Dict(help="assignment id -> due date, e.g. '2026-12-04 23:59:00 UTC'").tag(config=True)


def absolute_db_url(db_url: str, root: Path) -> str:
    """``db_url`` with a relative SQLite file made absolute from ``root`` (nbgrader would read
    it from the working directory); any other URL as it is."""
    url = make_url(db_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:" \
            or os.path.isabs(url.database):
        return db_url
    return url.set(database=str(Path(root) / url.database)).render_as_string(hide_password=False)


@dataclass(frozen=True)
class CourseLayout:
    """One course: its root, its configuration and the paths of every nbgrader step."""

    root: Path
    config: Config = field(repr=False, compare=False)
    coursedir: CourseDirectory = field(repr=False, compare=False)

    @classmethod
    def load(cls, root: str | Path | None = None) -> "CourseLayout":
        """The course whose ``nbgrader_config.py`` is in ``root`` (default: the working folder)."""
        root = Path(root if root is not None else os.getcwd()).resolve()
        if not (root / CONFIG_FILE).is_file():
            raise NotACourse(f"{root} is not a course (no {CONFIG_FILE})")
        config = PyFileConfigLoader(CONFIG_FILE, path=str(root)).load_config()
        coursedir = CourseDirectory(config=config)
        if "root" not in config.CourseDirectory:
            coursedir.root = str(root)
        return cls(Path(coursedir.root), config, coursedir)

    @classmethod
    def of(cls, coursedir: CourseDirectory) -> "CourseLayout":
        """The course of a running nbgrader command, as that command sees it."""
        return cls(Path(coursedir.root), coursedir.config, coursedir)

    # --- configuration ------------------------------------------------------------------

    @property
    def course_id(self) -> str:
        return self.coursedir.course_id

    @property
    def db_url(self) -> str:
        """The gradebook's URL, absolute."""
        return absolute_db_url(self.coursedir.db_url, self.root)

    @property
    def gradebook_path(self) -> Path | None:
        """The gradebook's SQLite file (None when the gradebook is not a SQLite file)."""
        url = make_url(self.db_url)
        return Path(url.database) if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") \
            else None

    @property
    def gradebook_folder(self) -> Path:
        """Where the gradebook's side files go (the class runner's lock and logs): the SQLite
        file's folder, or ``<root>/gradebook`` when the gradebook is on a database server."""
        return self.gradebook_path.parent if self.gradebook_path is not None else self.root / "gradebook"

    def gradebook(self) -> AbstractContextManager:
        """nbgrader's ``Gradebook`` of this course (use it in a ``with`` block)."""
        from nbgrader.api import Gradebook

        return Gradebook(self.db_url, self.course_id)

    @property
    def due_dates(self) -> dict[str, str]:
        """assignment -> due date, as nbgrader_config.py gives them."""
        return dict(CourseSchedule(config=self.config).due_dates)


    # --- paths ----------------------------------------------------------------------------

    def path(self, step: str, student: str, assignment: str) -> Path:
        """``<root>/<step>/<student>/<assignment>`` as the course's directory structure puts it."""
        return Path(self.coursedir.format_path(step, student, assignment))

    def source(self, assignment: str) -> Path:
        return self.path(self.coursedir.source_directory, ".", assignment)

    def release(self, assignment: str) -> Path:
        return self.path(self.coursedir.release_directory, ".", assignment)

    def submitted(self, student: str, assignment: str) -> Path:
        return self.path(self.coursedir.submitted_directory, student, assignment)

    def autograded(self, student: str, assignment: str) -> Path:
        return self.path(self.coursedir.autograded_directory, student, assignment)

    def feedback(self, student: str, assignment: str) -> Path:
        return self.path(self.coursedir.feedback_directory, student, assignment)

    def students(self, assignment: str) -> list[str]:
        """Students with a submission of ``assignment`` in the submitted folder, sorted."""
        step = self.coursedir.submitted_directory
        candidates = glob.glob(self.coursedir.format_path(step, "*", glob.escape(assignment)))
        pattern = re.compile(self.coursedir.format_path(step, "(?P<student>[^/]+)", re.escape(assignment),
                                                        escape=True) + r"\Z")
        found = (pattern.match(os.path.normpath(path)) for path in candidates if _real_folder(path, levels=2))
        return sorted(m.group("student") for m in found if m)


def _real_folder(path: str, levels: int) -> bool:
    """A folder, and neither it nor its ``levels - 1`` parents are symbolic links (a student's
    folder that links elsewhere is not that student's submission)."""
    if not os.path.isdir(path):
        return False
    for _ in range(levels):
        if os.path.islink(path):
            return False
        path = os.path.dirname(path)
    return True
