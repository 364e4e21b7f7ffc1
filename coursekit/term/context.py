"""Which course and which assignment a command works on, found as every coursekit command finds them.

``--course`` or the nearest folder upwards with nbgrader_config.py; ``--assignment`` or the course's only
one. The exit statuses the commands share. Used by the ``coursekit`` command (coursekit.term.cli) and by
the old ``python -m coursekit.term.<module>`` entry points.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import click

from coursekit.core.layout import CONFIG_FILE, CourseLayout, NotACourse

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_COURSE = 0, 1, 2, 3

class CourseError(click.ClickException):
    """The course cannot be used (exit status 3)."""

    exit_code = EXIT_COURSE

class Incomplete(click.ClickException):
    """The job was done, but not all of it (exit status 1)."""

    exit_code = EXIT_INCOMPLETE

def find_course_root(start: Path | None = None) -> Path:
    """The nearest folder, from ``start`` (the working folder) upwards, with nbgrader_config.py."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_FILE).is_file():
            return folder
    raise CourseError(f"no {CONFIG_FILE} in {here} or any folder above it: run from the course folder "
                      "or pass --course")

def load_layout(course: str | None) -> CourseLayout:
    root = Path(course) if course else find_course_root()
    try:
        return CourseLayout.load(root)
    except NotACourse as err:
        raise CourseError(f"{err}: pass the course's root folder to --course") from None
    except Exception as err:  # the config file itself fails to load
        raise CourseError(f"{root / CONFIG_FILE} could not be read: {type(err).__name__}: {err}") from None

def gradebook_assignments(layout: CourseLayout) -> list[str]:
    """The assignments the gradebook knows; [] without a gradebook (never creates one)."""
    path = layout.gradebook_path
    if path is not None and not path.is_file():
        return []
    with layout.gradebook() as gb:
        return sorted(a.name for a in gb.assignments)

def default_assignment(layout: CourseLayout) -> str:
    """The course's only assignment: from the config's due dates, else from the gradebook."""
    for source, names in (("c.CourseSchedule.due_dates", sorted(layout.due_dates)),
                          ("the gradebook", gradebook_assignments(layout))):
        if len(names) == 1:
            return names[0]
        if len(names) > 1:
            raise click.UsageError(f"the course has several assignments ({source}): {', '.join(names)}; "
                                   "choose one with --assignment")
    raise click.UsageError(f"the course names no assignment (no c.CourseSchedule.due_dates in {CONFIG_FILE}, "
                           "no gradebook): pass --assignment")

class Context:
    """What a subcommand works on, read when it runs (never for --help)."""

    def __init__(self, course: str | None, assignment: str | None):
        self._course, self._assignment = course, assignment

    @functools.cached_property
    def layout(self) -> CourseLayout:
        return load_layout(self._course)

    @functools.cached_property
    def assignment(self) -> str:
        return self._assignment or default_assignment(self.layout)

    def known_assignment(self) -> str:
        """The assignment, which the gradebook must know."""
        if self.assignment not in gradebook_assignments(self.layout):
            raise CourseError(f"the gradebook ({self.layout.db_url}) does not know assignment '{self.assignment}': "
                              f"run `nbgrader generate_assignment {self.assignment}` first")
        return self.assignment

def resolve(course: str | None, assignment: str | None) -> tuple[CourseLayout, str]:
    """(layout, assignment) as the subcommands find them, for the old entry points."""
    ctx = Context(course, assignment)
    return ctx.layout, ctx.assignment
