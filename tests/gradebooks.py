"""A gradebook's contents by natural keys, read through nbgrader's own Gradebook API (what
formgrader reads), on any database: to compare two gradebooks field by field."""

from __future__ import annotations

from builder import ASSIGNMENT


def gradebook_rows(course, students: list[str] | None = None, assignment: str = ASSIGNMENT) -> dict:
    """(student, notebook, cell, what) -> every field of that row, nbgrader's and the TAs'."""
    from nbgrader.api import MissingEntry

    rows = {}
    with course.layout.gradebook() as gb:
        for student in students if students is not None else [s.id for s in gb.students]:
            try:
                sub = gb.find_submission(assignment, student)
            except MissingEntry:
                continue
            s = sub.student
            rows[(student, "", "", "student")] = (s.first_name, s.last_name, s.email)
            rows[(student, "", "", "submission")] = (sub.timestamp, sub.extension)
            for nb in sub.notebooks:
                rows[(student, nb.name, "", "notebook")] = (nb.late_submission_penalty, nb.flagged)
                for g in nb.grades:
                    rows[(student, nb.name, g.name, "grade")] = (g.auto_score, g.manual_score, g.extra_credit,
                                                                 g.needs_manual_grade)
                for c in nb.comments:
                    rows[(student, nb.name, c.name, "comment")] = (c.auto_comment, c.manual_comment)
    return rows
