"""Grades into the LMS: Canvas's gradebook CSV filled in, or Moodle's grade import CSV.

Canvas (``coursekit export --lms canvas --roster export.csv``): the file is Canvas's own gradebook
export (Grades → Export), written back with this assignment's column filled in, ready for
Grades → Import. Its format: a header row ``Student,ID,SIS User ID,SIS Login ID,Section,`` then
one column per assignment named ``Name (canvas id)`` and read-only totals; then a row whose first
cell is ``    Points Possible`` (the points under each assignment column; some exports add a
``Manual Posting`` row too); then one row per student. Canvas matches rows by ID / SIS User ID /
SIS Login ID, and assignment columns by their ``(id)``; a column without an id makes Canvas
create a new assignment, worth what the Points Possible row says.

- Every row and cell is written back as it was read, byte for byte (quoting, line endings, the
  byte-order mark), except: this assignment's cells, and any cell that a spreadsheet would run
  as a formula (a name such as ``=HYPERLINK(...)``), which gets csvsafe's ``'`` (Canvas matches
  students by their ids, never by the name).
- The column: the one whose name, without its ``(id)``, is the assignment's title
  (``c.LmsExport.titles``, default: the nbgrader assignment name; ``--column`` to name it);
  when there is none a new column of that title is added at the end, with the assignment's
  points in the Points Possible row: Canvas then creates the assignment on import.
- Students: a row's SIS Login ID is the nbgrader student id, unless ``--map`` (a CSV
  ``nbgrader_id,lms_id``) says otherwise. Never guessed: students in the gradebook with no
  roster row (dropped the course, or an id to map) and roster rows with no gradebook student
  are listed, their cells left as they were, and the export exits 1.
- Score: nbgrader's own total, as ``nbgrader export`` computes it: autograded points plus TA
  marks (and extra credit) minus the late penalty (the notebooks' ``late_submission_penalty``,
  computed from the student's own due date), never below 0. A student the gradebook knows who
  never submitted gets a BLANK cell, not 0: Canvas shows it as missing and its own missing
  policy (or the instructor) decides; a 0 would look like a submission that earned nothing.
  A submission with written answers still waiting for a TA is exported with those at 0 and
  listed (exit 1).

Moodle (``--lms moodle``): Moodle imports grades from a CSV of its own (Grades → Import → CSV
file) whose columns the teacher maps on import: one column identifies the user, here
``Email address`` (``--moodle-id email``: the student's email in the gradebook, or ``--map``) or
``ID number`` (``--moodle-id idnumber``: the nbgrader id, or ``--map``), and one column holds the
grade item's points (named by the assignment's title). With ``--roster`` (Moodle's own grade
export, which has both columns), students are matched against it as for Canvas.

Exporting twice writes the same bytes: nothing in the output depends on time or order of runs.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from traitlets import Dict
from traitlets.config import Configurable

from coursekit.core import csvsafe
from coursekit.core.layout import CourseLayout

POINTS_POSSIBLE = "Points Possible"
CANVAS_ID_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID")
_CANVAS_COLUMN = re.compile(r"(?P<title>.*?)\s*\((?P<id>\d+)\)\Z", re.S)
MOODLE_ID_COLUMNS = {"email": "Email address", "idnumber": "ID number"}


class LmsExport(Configurable):
    """How the course's assignments are named in the LMS (``c.LmsExport.titles`` in nbgrader_config.py)."""

    titles = Dict(help="assignment id -> its name in the LMS, e.g. {'week2': 'Week 2: computer vision'} "
                       "(default: the assignment id)").tag(config=True)


class LmsError(ValueError):
    """The export cannot be written (the message says why)."""


# --- CSV read as written -------------------------------------------------------------------------


@dataclass
class Field:
    value: str
    raw: str          # the field's text in the file, quotes included

    @classmethod
    def new(cls, value: str) -> "Field":
        value = csvsafe.cell(value)
        needs_quotes = any(ch in value for ch in ',"\r\n') or value != value.strip()
        return cls(value, '"' + value.replace('"', '""') + '"' if needs_quotes else value)


@dataclass
class Record:
    fields: list[Field]
    end: str          # the line ending that closed it ("" for a last line without one)

    @property
    def values(self) -> list[str]:
        return [f.value for f in self.fields]

    @property
    def raw(self) -> str:
        return ",".join(f.raw for f in self.fields) + self.end


def split_records(text: str) -> list[Record]:
    """``text`` as CSV records (RFC 4180, as Canvas writes it and Python's csv module reads it),
    each field with its raw text, so that what is not changed is written back as it was."""
    records, i, n = [], 0, len(text)
    while i < n:
        fields = []
        while True:
            start = i
            if i < n and text[i] == '"':
                i += 1
                while True:
                    j = text.find('"', i)
                    if j < 0:
                        raise LmsError(f"a quoted field that never ends, from character {start}")
                    if text.startswith('""', j):
                        i = j + 2
                        continue
                    i = j + 1
                    break
                fields.append(Field(text[start + 1:i - 1].replace('""', '"'), text[start:i]))
            else:
                while i < n and text[i] not in ',\r\n':
                    i += 1
                fields.append(Field(text[start:i], text[start:i]))
            if i >= n:
                end = ""
                break
            if text[i] == ",":
                i += 1
                continue
            if text.startswith("\r\n", i):
                end, i = "\r\n", i + 2
                break
            if text[i] in "\r\n":
                end, i = text[i], i + 1
                break
            raise LmsError(f"a quoted field followed by text at character {i}: not a CSV file as Canvas writes it")
        records.append(Record(fields, end))
    return records


def read_text(path: Path) -> tuple[str, str]:
    """(byte-order mark or "", text) of a UTF-8 CSV file."""
    data = Path(path).read_bytes()
    bom = "\ufeff" if data.startswith(b"\xef\xbb\xbf") else ""
    try:
        return bom, data.decode("utf-8")[len(bom):]
    except UnicodeDecodeError as err:
        raise LmsError(f"{path} is not UTF-8 ({err}); export it from the LMS again") from None


def read_map(path: Path | None) -> dict[str, str]:
    """nbgrader id -> LMS id, from a CSV with the columns nbgrader_id,lms_id."""
    if path is None:
        return {}
    _, text = read_text(path)
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and not {"nbgrader_id", "lms_id"} <= set(rows[0]):
        raise LmsError(f"{path}: the mapping needs the columns nbgrader_id,lms_id")
    mapping: dict[str, str] = {}
    for row in rows:
        nb_id, lms_id = (row.get("nbgrader_id") or "").strip(), (row.get("lms_id") or "").strip()
        if not nb_id or not lms_id:
            continue
        if nb_id in mapping and mapping[nb_id] != lms_id:
            raise LmsError(f"{path}: {nb_id} is mapped twice")
        mapping[nb_id] = lms_id
    if len(set(mapping.values())) != len(mapping):
        raise LmsError(f"{path}: two nbgrader ids are mapped to the same LMS id")
    return mapping


# --- grades ------------------------------------------------------------------------------------


@dataclass
class Grade:
    student: str
    email: str | None
    submitted: bool
    score: float | None      # None: never submitted
    pending: int = 0         # written answers still waiting for a TA


@dataclass
class Grades:
    assignment: str
    title: str
    max_score: float
    students: dict[str, Grade]


def title_of(layout: CourseLayout, assignment: str) -> str:
    return LmsExport(config=layout.config).titles.get(assignment, assignment)


def read_grades(layout: CourseLayout, assignment: str) -> Grades:
    """Every student of the gradebook, with nbgrader's total for ``assignment`` (None: no submission)."""
    from nbgrader.api import MissingEntry

    students = {}
    with layout.gradebook() as gb:
        try:
            assign = gb.find_assignment(assignment)
        except MissingEntry:
            raise LmsError(f"the gradebook does not know assignment '{assignment}'") from None
        max_score = float(assign.max_score or 0)
        for student in gb.students:
            try:
                sub = gb.find_submission(assignment, student.id)
            except MissingEntry:
                students[student.id] = Grade(student.id, student.email, False, None)
                continue
            score = max(0.0, float(sub.score or 0) - float(sub.late_submission_penalty or 0))
            pending = sum(bool(g.needs_manual_grade) and g.manual_score is None
                          for nb in sub.notebooks for g in nb.grades)
            students[student.id] = Grade(student.id, student.email, True, score, pending)
    return Grades(assignment, title_of(layout, assignment), max_score, students)


def number(value: float) -> str:
    """Points as the LMS reads them: plain decimal, at most 2 places, no exponent."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


# --- the outcome -------------------------------------------------------------------------------


@dataclass
class Export:
    out: Path
    written: dict[str, str] = field(default_factory=dict)        # nbgrader id -> cell written
    not_submitted: list[str] = field(default_factory=list)       # blank: in the gradebook, no submission
    not_in_roster: list[str] = field(default_factory=list)       # gradebook students with no LMS row
    not_in_gradebook: list[str] = field(default_factory=list)    # LMS rows (their id) with no gradebook student
    no_identifier: list[str] = field(default_factory=list)       # (Moodle) no email / id number to write
    pending: list[str] = field(default_factory=list)             # written answers still waiting for a TA
    made_safe: int = 0                                           # cells given csvsafe's quote
    column: str = ""
    new_column: bool = False

    @property
    def complete(self) -> bool:
        return not (self.not_in_roster or self.not_in_gradebook or self.no_identifier or self.pending)

    def report(self) -> str:
        lines = [f"wrote {self.out}: {len(self.written)} student(s) in column {self.column!r}"
                 + (" (a new column: Canvas creates the assignment on import)" if self.new_column else "")]
        sections = [
            ("never submitted (left blank, not 0)", self.not_submitted),
            ("in the gradebook but not in the LMS roster (dropped the course? map them with --map): not exported",
             self.not_in_roster),
            ("in the LMS roster but not in the gradebook (no nbgrader student with that id): left as they were",
             self.not_in_gradebook),
            ("no identifier for Moodle (no email in the gradebook: give one with --map): not exported",
             self.no_identifier),
            ("written answers still waiting for a TA (exported with those at 0)", self.pending),
        ]
        for title, names in sections:
            if names:
                lines.append(f"{len(names)} {title}:")
                lines += [f"  {name}" for name in names]
        if self.made_safe:
            lines.append(f"{self.made_safe} cell(s) that a spreadsheet would run as a formula were quoted with '")
        return "\n".join(lines)


def _display(value: str) -> str:
    from coursekit.submissions.intake import shown

    return shown(value)


# --- Canvas ------------------------------------------------------------------------------------


def export_canvas(layout: CourseLayout, assignment: str, roster: Path, out: Path | None = None,
                  mapping: Path | None = None, column: str | None = None) -> Export:
    grades = read_grades(layout, assignment)
    to_lms = read_map(mapping)
    bom, text = read_text(roster)
    records = split_records(text)
    if not records:
        raise LmsError(f"{roster} is empty")
    header = records[0].values
    missing = [name for name in ("ID", "SIS Login ID") if name not in header]
    if missing:
        raise LmsError(f"{roster} is not a Canvas gradebook export: no column {', '.join(missing)} "
                       f"(its header: {', '.join(_display(h) for h in header[:8])})")
    login_col, id_col = header.index("SIS Login ID"), header.index("ID")
    title = column or grades.title
    matches = [i for i, name in enumerate(header) if i > login_col and _column_title(name) == title]
    if len(matches) > 1:
        raise LmsError(f"{roster} has {len(matches)} columns named {title!r}: name the one with --column "
                       f"'{header[matches[0]]}'")
    result = Export(out=Path(out) if out else roster, column=title)
    if matches:
        col, result.column = matches[0], header[matches[0]]
    else:
        col, result.new_column = len(header), True

    lms_to_nb: dict[str, str] = {}
    for student in grades.students:
        lms_to_nb[to_lms.get(student, student)] = student
    seen: set[str] = set()
    output = []
    for index, record in enumerate(records):
        fields = list(record.fields)
        first = fields[0].value.strip() if fields else ""
        is_student = index > 0 and first != POINTS_POSSIBLE and len(fields) > id_col and fields[id_col].value.strip()
        if index == 0:
            new_value = title if result.new_column else None
        elif first == POINTS_POSSIBLE:
            new_value = number(grades.max_score) if result.new_column else None
        elif not is_student:
            new_value = "" if result.new_column else None
        else:
            login = fields[login_col].value.strip() if len(fields) > login_col else ""
            student = lms_to_nb.get(login)
            if student is None:
                result.not_in_gradebook.append(_display(login or f"(no SIS Login ID: {fields[0].value})"))
                new_value = "" if result.new_column else None
            else:
                seen.add(student)
                grade = grades.students[student]
                new_value = "" if grade.score is None else number(grade.score)
                result.written[student] = new_value
                if grade.score is None:
                    result.not_submitted.append(student)
                elif grade.pending:
                    result.pending.append(student)
        if new_value is not None:
            while len(fields) < col:
                fields.append(Field("", ""))
            cell = Field.new(new_value)
            if col < len(fields):
                if fields[col].value != cell.value:
                    fields[col] = cell
            else:
                fields.append(cell)
        for i, f in enumerate(fields):
            if i != col and csvsafe.cell(f.value) != f.value:
                fields[i] = Field.new(f.value)
                result.made_safe += 1
        output.append(Record(fields, record.end))
    result.not_in_roster = sorted(s for s in grades.students if s not in seen)
    result.not_submitted.sort()
    result.pending.sort()
    data = bom + "".join(r.raw for r in output)
    result.out.write_bytes(data.encode("utf-8"))
    return result


def _column_title(name: str) -> str:
    """A Canvas assignment column's name without its ``(id)``."""
    m = _CANVAS_COLUMN.match(name)
    return m.group("title") if m else name.strip()


# --- Moodle ------------------------------------------------------------------------------------


def export_moodle(layout: CourseLayout, assignment: str, out: Path, moodle_id: str = "email",
                  roster: Path | None = None, mapping: Path | None = None) -> Export:
    if moodle_id not in MOODLE_ID_COLUMNS:
        raise LmsError(f"--moodle-id is one of {', '.join(MOODLE_ID_COLUMNS)}")
    grades = read_grades(layout, assignment)
    to_lms = read_map(mapping)
    id_column = MOODLE_ID_COLUMNS[moodle_id]
    result = Export(out=Path(out), column=grades.title)
    identifiers: dict[str, str] = {}
    for student, grade in sorted(grades.students.items()):
        ident = to_lms.get(student) or (grade.email if moodle_id == "email" else student)
        if not ident:
            result.no_identifier.append(student)
        else:
            identifiers[student] = ident.strip()
    if roster is not None:
        _, text = read_text(roster)
        rows = list(csv.DictReader(io.StringIO(text)))
        if rows and id_column not in rows[0]:
            raise LmsError(f"{roster} has no column {id_column!r} (Moodle's grade export has it)")
        in_roster = {(row.get(id_column) or "").strip() for row in rows} - {""}
        result.not_in_roster = sorted(s for s, ident in identifiers.items() if ident not in in_roster)
        result.not_in_gradebook = sorted(_display(i) for i in in_roster - set(identifiers.values()))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(csvsafe.row([id_column, grades.title]))
    for student, ident in sorted(identifiers.items(), key=lambda kv: kv[1]):
        if student in result.not_in_roster:
            continue
        grade = grades.students[student]
        cell = "" if grade.score is None else number(grade.score)
        writer.writerow(csvsafe.row([ident, cell]))
        result.written[student] = cell
        if grade.score is None:
            result.not_submitted.append(student)
        elif grade.pending:
            result.pending.append(student)
    result.not_submitted.sort()
    result.pending.sort()
    result.out.write_bytes(buffer.getvalue().encode("utf-8"))
    return result
