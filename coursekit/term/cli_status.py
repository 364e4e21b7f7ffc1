"""``coursekit status``: where each student's submission of an assignment stands.

Per student (the gradebook's students and everyone with a submission folder): submitted, and
when (timestamp.txt, read strictly as the intake reads it); late against the student's own due
date (their extension, else the assignment's); graded (nbgrader's rule, as the class runner
applies it: the autograded folder is in place and not older than the submission); the
autograded score; written answers still waiting for a TA; feedback generated (a page per
submitted notebook in feedback/) and released (that page in nbgrader's exchange, where
``nbgrader release_feedback`` puts it, named by nbgrader's own hash).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from coursekit.term import extensions
from coursekit.submissions import intake
from coursekit.core.layout import CourseLayout


@dataclass
class StudentStatus:
    student: str
    submitted: bool = False
    timestamp: dt.datetime | None = None
    due: dt.datetime | None = None
    extended: bool = False
    graded: bool = False
    auto_score: float | None = None
    auto_max: float | None = None
    pending: int = 0
    notebooks: int = 0
    feedback: int = 0          # pages generated
    released: int = 0          # pages in the exchange

    @property
    def late(self) -> bool:
        return self.timestamp is not None and self.due is not None and self.timestamp > self.due

    @property
    def left_to_do(self) -> bool:
        return self.submitted and (not self.graded or self.pending > 0 or self.feedback < self.notebooks)


def exchange_feedback_folder(layout: CourseLayout) -> Path:
    """Where ``nbgrader release_feedback`` puts this course's pages."""
    from nbgrader.exchange.default.exchange import Exchange

    root = Exchange(config=layout.config).root
    return Path(root) / layout.course_id / "feedback"


def _released(layout: CourseLayout, page: Path, exchange: Path) -> bool:
    from nbgrader.utils import notebook_hash

    try:
        secret = (page.parent / "submission_secret.txt").read_text()  # as nbgrader reads it
    except OSError:
        return False
    return (exchange / f"{notebook_hash(secret=secret, notebook_id=page.stem)}.html").is_file()


def student_status(layout: CourseLayout, assignment: str) -> list[StudentStatus]:
    from nbgrader.api import MissingEntry

    from coursekit.grading.runner import is_graded

    own_due = {e.student: e.until for e in extensions.listing(layout, assignment)}
    exchange = exchange_feedback_folder(layout)
    rows: dict[str, StudentStatus] = {}
    with layout.gradebook() as gb:
        assign = gb.find_assignment(assignment)
        names = {s.id for s in gb.students} | set(layout.students(assignment))
        for student in sorted(names):
            row = rows[student] = StudentStatus(student, due=own_due.get(student, assign.duedate),
                                                extended=student in own_due)
            folder = layout.submitted(student, assignment)
            row.submitted = folder.is_dir() and not folder.is_symlink()
            if row.submitted:
                row.timestamp = intake.read_timestamp(folder)
            try:
                sub = gb.find_submission(assignment, student)
            except MissingEntry:
                continue
            row.graded = row.submitted and is_graded(layout, student, assignment)
            row.auto_score, row.auto_max = float(sub.code_score or 0), float(sub.max_code_score or 0)
            row.pending = sum(bool(g.needs_manual_grade) and g.manual_score is None
                              for nb in sub.notebooks for g in nb.grades)
            names_nb = [nb.name for nb in sub.notebooks]
            row.notebooks = len(names_nb)
            pages = layout.feedback(student, assignment)
            for name in names_nb:
                page = pages / f"{name}.html"
                if page.is_file():
                    row.feedback += 1
                    row.released += _released(layout, page, exchange)
            if row.timestamp is None and sub.timestamp is not None:
                row.timestamp = sub.timestamp
    return list(rows.values())


def format_table(assignment: str, rows: list[StudentStatus]) -> str:
    # the whole id, however long (ids are at most 64 characters): a cut id could name two students
    names = {r.student: intake.shown(r.student, 80) for r in rows}
    width = max([len("student"), *map(len, names.values())])
    head = (f"{'student':<{width}} {'submitted':<20} {'late':<5} {'due':<17} {'graded':<6} {'autograded':>11} "
            f"{'written':>7} {'feedback':<9} {'released':<8}")
    lines = [f"{assignment}: {sum(r.submitted for r in rows)} submitted, {sum(r.graded for r in rows)} graded, "
             f"{sum(r.pending for r in rows)} written answer(s) waiting for a TA", head, "-" * len(head)]
    for r in rows:
        when = r.timestamp.strftime("%Y-%m-%d %H:%M") if r.timestamp else ("yes (no time)" if r.submitted else "no")
        due = (r.due.strftime("%Y-%m-%d %H:%M") + ("*" if r.extended else "")) if r.due else "-"
        score = f"{r.auto_score:g}/{r.auto_max:g}" if r.auto_score is not None else "-"
        feedback = f"{r.feedback}/{r.notebooks}" if r.notebooks else "-"
        released = f"{r.released}/{r.notebooks}" if r.notebooks else "-"
        lines.append(f"{names[r.student]:<{width}} {when:<20} {'yes' if r.late else '':<5} {due:<17} "
                     f"{'yes' if r.graded else 'no':<6} {score:>11} {r.pending:>7} {feedback:<9} {released:<8}")
    if any(r.extended for r in rows):
        lines.append("* the student's own due date (coursekit extend --list)")
    return "\n".join(lines)
