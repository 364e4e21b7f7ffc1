"""Per-student grade summary of an assignment, read from the gradebook.

``python -m coursekit.term.summary [ASSIGNMENT] [--course PATH]`` (bin/demo ends with it); the
assignment defaults to the course's only one, as for every ``coursekit`` command, and
``coursekit status`` shows more. ``--help`` only prints.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from nbgrader.api import MissingEntry

from coursekit.core.layout import CourseLayout


@dataclass
class StudentRow:
    student: str
    auto_score: float
    auto_max: float
    manual_pending: int
    late_penalty: float
    score: float
    max_score: float
    seconds_late: float


def student_rows(layout: CourseLayout, assignment: str) -> list[StudentRow]:
    rows = []
    with layout.gradebook() as gb:
        for student in gb.students:
            try:
                sub = gb.find_submission(assignment, student.id)
            except MissingEntry:
                continue
            pending = sum(grade.needs_manual_grade for nb in sub.notebooks for grade in nb.grades)
            rows.append(StudentRow(student.id, sub.code_score, sub.max_code_score, pending,
                                   sub.late_submission_penalty or 0.0,
                                   sub.score, sub.max_score, sub.total_seconds_late or 0.0))
    return sorted(rows, key=lambda r: r.student)


def format_table(rows: list[StudentRow]) -> str:
    head = f"{'student':<28} {'autograded':>12} {'late penalty':>13} {'total so far':>13} {'written to grade':>17}"
    lines = [head, "-" * len(head)]
    for r in rows:
        late = f"-{r.late_penalty:g}" if r.late_penalty else ("late" if r.seconds_late > 0 else "")
        lines.append(f"{r.student:<28} {r.auto_score:>6g} / {r.auto_max:<4g} {late:>13} "
                     f"{r.score - r.late_penalty:>6g} / {r.max_score:<4g} {r.manual_pending:>17}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coursekit.term.summary",
                                     description="Per-student table of an assignment's grades, from the gradebook.")
    parser.add_argument("assignment", nargs="?", help="the assignment (default: the course's only one)")
    parser.add_argument("--course", help="the course's root folder (default: the folder with nbgrader_config.py, "
                                         "from here upwards)")
    args = parser.parse_args(argv)
    from coursekit.term import context

    try:
        layout, assignment = context.resolve(args.course, args.assignment)
    except context.click.ClickException as err:
        print(f"{parser.prog}: {err.format_message()}", file=sys.stderr)
        return err.exit_code
    rows = student_rows(layout, assignment)
    if not rows:
        print(f"no graded submissions of {assignment} in the gradebook")
        return 1
    print(f"{assignment}: {len(rows)} submission(s)")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
