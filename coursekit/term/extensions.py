"""Per-student due dates (extensions), where nbgrader keeps them, and the late policy re-applied.

nbgrader already has the field: ``SubmittedAssignment.extension`` (a timedelta added to the
assignment's due date: ``SubmittedAssignment.duedate``), and its late check
(``total_seconds_late``, hence ``AssignLatePenalties``) uses ``duedate + extension``. That row
exists only once the student's submission is in the gradebook, and students usually ask before
they submit. So an extension is recorded in two places:

- ``<gradebook folder>/extensions.json`` (beside the gradebook, never committed, 0600): per
  assignment and student, the new due date (UTC), the reason, and when it was granted. It is
  the TA's record, and it holds what the gradebook cannot (the reason; an extension for a
  student who has not submitted yet). Not a table of its own in the gradebook: the gradebook's
  schema is nbgrader's (alembic migrations), and the class runner's private gradebooks copy
  nbgrader's tables only.
- the gradebook's ``extension``, written by ``apply`` whenever the submission row exists:
  when the extension is granted, and again by every ``coursekit`` command that reads grades
  (grade, status, report, feedback, export), so that a submission graded after the extension
  was given gets it too. ``apply`` is idempotent.

When the extension changes the lateness of a submission that is already graded, the late
policy is applied again WITHOUT grading again: each notebook's ``late_submission_penalty`` is
recomputed by the course's plugin (``c.AssignLatePenalties.plugin_class``, coursekit.core.late) from
the notebook's current score (TA marks included) and the new lateness, clamped to [0, score]
as nbgrader's ``AssignLatePenalties`` does.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from coursekit.submissions import intake
from coursekit.core.layout import CourseLayout

FILENAME = "extensions.json"


class ExtensionError(ValueError):
    """A request that cannot be granted (the message says why)."""


@dataclass(frozen=True)
class Extension:
    student: str
    assignment: str
    until: dt.datetime          # naive UTC, as nbgrader stores dates
    reason: str = ""
    granted: str = ""           # ISO time it was granted (UTC)
    in_gradebook: bool | None = None  # None: no submission row yet (applied when there is one)


def utc_naive(when: dt.datetime) -> dt.datetime:
    """``when`` as nbgrader stores it: UTC without tzinfo (a naive time is taken as UTC)."""
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return when


def parse_date(text: str) -> dt.datetime:
    """A date as nbgrader's config takes due dates ('2026-12-08 23:59:00 UTC', ISO 8601, ...); no
    time zone means UTC, as for nbgrader."""
    from dateutil import parser as dateparser

    try:
        return utc_naive(dateparser.parse(text))
    except (ValueError, OverflowError) as err:
        raise ExtensionError(f"not a date: {text!r} ({err})") from None


def store_path(layout: CourseLayout) -> Path:
    return layout.gradebook_folder / FILENAME


def load(layout: CourseLayout) -> dict:
    """assignment -> student -> {"until", "reason", "granted"} (empty when there is no file)."""
    path = store_path(layout)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise ExtensionError(f"{path} cannot be read ({err}): fix or remove it") from None
    if not isinstance(data, dict):
        raise ExtensionError(f"{path} is not a JSON object: fix or remove it")
    return data


def save(layout: CourseLayout, data: dict) -> None:
    """Written whole to a new file that replaces the old one (never half-written), 0600."""
    path = store_path(layout)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".extensions-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True, ensure_ascii=False)
            f.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], OSError)


def assignment_duedate(layout: CourseLayout, assignment: str) -> dt.datetime | None:
    """The assignment's due date in the gradebook (naive UTC), None when it has none."""
    from nbgrader.api import MissingEntry

    with layout.gradebook() as gb:
        try:
            return gb.find_assignment(assignment).duedate
        except MissingEntry:
            raise ExtensionError(f"the gradebook does not know assignment '{assignment}'") from None


def check_student(student: str) -> None:
    """Student ids are validated as the intake validates submission folders."""
    problem = intake.id_problem(student)
    if problem:
        raise ExtensionError(problem)


def known_students(layout: CourseLayout, assignment: str) -> set[str]:
    """Students the course knows: in the gradebook, or with a submission folder."""
    with layout.gradebook() as gb:
        known = {s.id for s in gb.students}
    return known | set(layout.students(assignment))


def grant(layout: CourseLayout, assignment: str, student: str, *, until: dt.datetime | None = None,
          hours: float | None = None, reason: str = "", now: dt.datetime | None = None) -> Extension:
    """Give ``student`` a due date of their own: ``until`` (a date) or ``hours`` after the
    assignment's due date. Replaces an earlier extension (extensions never stack, as in nbgrader)."""
    check_student(student)
    if (until is None) == (hours is None):
        raise ExtensionError("give either a date (--until) or a number of hours (--hours)")
    due = assignment_duedate(layout, assignment)
    if due is None:
        raise ExtensionError(f"{assignment} has no due date in the gradebook: run `coursekit schedule` first")
    if hours is not None:
        if not hours > 0:
            raise ExtensionError("--hours must be more than 0")
        until = due + dt.timedelta(hours=hours)
    until = utc_naive(until)
    if until <= due:
        raise ExtensionError(f"{until:%Y-%m-%d %H:%M:%S} UTC is not after the due date of {assignment} "
                             f"({due:%Y-%m-%d %H:%M:%S} UTC)")
    data = load(layout)
    now = now or dt.datetime.now(dt.timezone.utc)
    data.setdefault(assignment, {})[student] = {
        "until": until.strftime("%Y-%m-%d %H:%M:%S UTC"), "reason": reason,
        "granted": utc_naive(now).strftime("%Y-%m-%d %H:%M:%S UTC")}
    save(layout, data)
    apply(layout, assignment, students=[student])
    return listing(layout, assignment, students=[student])[0]


def remove(layout: CourseLayout, assignment: str, student: str) -> bool:
    """Take ``student``'s extension back (their due date is the assignment's again); False if
    there was none. The late policy is applied again to what is already graded."""
    check_student(student)
    data = load(layout)
    had = data.get(assignment, {}).pop(student, None) is not None
    if had:
        if not data[assignment]:
            del data[assignment]
        save(layout, data)
    had = _set_in_gradebook(layout, assignment, student, None) or had
    return had


def listing(layout: CourseLayout, assignment: str, students: list[str] | None = None) -> list[Extension]:
    """The extensions of ``assignment``: those recorded here, and those found only in the
    gradebook (set by other means: no reason known)."""
    from nbgrader.api import MissingEntry

    recorded = load(layout).get(assignment, {})
    found: dict[str, Extension] = {}
    with layout.gradebook() as gb:
        try:
            assign = gb.find_assignment(assignment)
        except MissingEntry:
            raise ExtensionError(f"the gradebook does not know assignment '{assignment}'") from None
        rows = {sub.student_id: sub for sub in assign.submissions}
        for student, entry in recorded.items():
            sub = rows.get(student)
            until = parse_date(entry["until"])
            applied = None if sub is None else (sub.extension is not None and assign.duedate is not None
                                                and assign.duedate + sub.extension == until)
            found[student] = Extension(student, assignment, until, entry.get("reason", ""), entry.get("granted", ""),
                                       applied)
        for student, sub in rows.items():
            if student not in found and sub.extension is not None and assign.duedate is not None:
                found[student] = Extension(student, assignment, assign.duedate + sub.extension, "", "", True)
    wanted = sorted(found) if students is None else [s for s in students if s in found]
    return [found[s] for s in wanted]


def due_for(layout: CourseLayout, assignment: str, student: str) -> dt.datetime | None:
    """``student``'s own due date: their extension (recorded, or in the gradebook), else the assignment's."""
    own = listing(layout, assignment, students=[student])
    return own[0].until if own else assignment_duedate(layout, assignment)


def apply(layout: CourseLayout, assignment: str, students: list[str] | None = None) -> list[str]:
    """Write the recorded extensions into the gradebook's submission rows that exist, and apply
    the late policy again where the lateness changed. Returns the students whose row changed.
    Idempotent: a second call changes nothing."""
    recorded = load(layout).get(assignment, {})
    changed = []
    for student, entry in sorted(recorded.items()):
        if students is not None and student not in students:
            continue
        if _set_in_gradebook(layout, assignment, student, parse_date(entry["until"])):
            changed.append(student)
    return changed


def _set_in_gradebook(layout: CourseLayout, assignment: str, student: str, until: dt.datetime | None) -> bool:
    """Set the submission's extension so that its due date is ``until`` (None: no extension),
    and recompute its notebooks' late penalties. False when there is no submission row or
    nothing changed."""
    from nbgrader.api import MissingEntry

    with layout.gradebook() as gb:
        try:
            sub = gb.find_submission(assignment, student)
        except MissingEntry:
            return False
        due = sub.assignment.duedate
        extension = None if until is None or due is None else until - due
        if sub.extension == extension:
            return False
        sub.extension = extension
        gb.db.commit()
        reapply_late_policy(layout, gb, assignment, student)
        return True


def late_plugin(layout: CourseLayout):
    """The course's late-submission plugin, configured as nbgrader autograde configures it."""
    from nbgrader.preprocessors import AssignLatePenalties

    preprocessor = AssignLatePenalties(config=layout.config)
    preprocessor.init_plugin()
    return preprocessor, preprocessor.plugin_inst


def reapply_late_policy(layout: CourseLayout, gb, assignment: str, student: str) -> dict[str, float | None]:
    """Each notebook's late penalty computed again from its current score and the submission's
    current lateness (due date + extension), as ``AssignLatePenalties`` computes it at autograde,
    without running anything. Returns notebook -> penalty."""
    preprocessor, plugin = late_plugin(layout)
    sub = gb.find_submission(assignment, student)
    gb.db.refresh(sub)
    seconds_late = sub.total_seconds_late
    penalties = {}
    for nb in sub.notebooks:
        penalty = None
        if seconds_late > 0:
            penalty = plugin.late_submission_penalty(student, nb.score, seconds_late)
            if penalty is not None:
                penalty = preprocessor._check_late_penalty(nb, penalty)
        nb.late_submission_penalty = penalty
        penalties[nb.name] = penalty
    gb.db.commit()
    rewrite_late_record(layout, assignment, student, sub, plugin)
    return penalties


def rewrite_late_record(layout: CourseLayout, assignment: str, student: str, sub, plugin) -> None:
    """The "late" entry that grading wrote in the submission's grading-problems.json (what the
    feedback page and the class report show), said again for the new due date, or removed when
    the submission is no longer late. The other entries are kept as they are."""
    import math

    from coursekit.core import problems

    folder = layout.autograded(student, assignment)
    path = problems.path_for(folder)
    if not path.is_file():
        return
    recorded = problems.read(folder).problems()
    old_notes = [e.get("message", "") for e in recorded if e.get("kind") == "late"]
    entries = []
    seconds = sub.total_seconds_late or 0
    if seconds > 0:
        percent = plugin.late_submission_penalty(student, 100.0, seconds)
        days, rest = divmod(int(seconds), 86400)
        taken = f"{percent:g} % of each notebook's score" if percent else "nothing"
        entries.append({"kind": "late", "notebook": None, "cell": None, "message":
                        f"Submitted {days} d {rest // 3600} h {rest % 3600 // 60} min after the due date "
                        f"({sub.duedate:%Y-%m-%d %H:%M} UTC, an extension; submitted {sub.timestamp:%Y-%m-%d %H:%M} "
                        f"UTC): {math.ceil(seconds / 86400)} started day(s) late, so the late policy takes {taken}."})
    problems.replace(folder, "late", [problems.Entry(**e) for e in entries], seconds_late=seconds)
    new_notes = [e["message"] for e in entries if e.get("kind") == "late"]
    for nb in sub.notebooks:
        rewrite_notes(folder / f"{nb.name}.ipynb", old_notes, new_notes)


def rewrite_notes(path: Path, old: list[str], new: list[str]) -> None:
    """The "Grading notes" cell that grading put at the top of an autograded notebook
    (coursekit.submissions.sanitize.put_notes), with the notes ``old`` replaced by ``new``; no other cell is
    touched (nothing is graded again). The cell goes when no note is left."""
    import nbformat

    from coursekit.submissions import sanitize

    try:
        nb = nbformat.read(path, as_version=4)
    except (OSError, ValueError):
        return
    old_lines = {f"- {sanitize.quote_markdown(note)}" for note in old}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and cell.source.startswith(sanitize.NOTES_MARK):
            lines = [line for line in cell.source.split("\n") if line not in old_lines]
            lines += [f"- {sanitize.quote_markdown(note)}" for note in new]
            if not any(line.startswith("- ") for line in lines):
                del nb.cells[index]
            else:
                cell.source = "\n".join(lines)
            break
    else:
        if not new:
            return
        sanitize.put_notes(nb, new)
    nbformat.write(nb, path)
