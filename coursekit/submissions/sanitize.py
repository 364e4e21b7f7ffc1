"""Submission repairs: what stock nbgrader (0.9.6) does wrong with broken submissions, fixed
inside ``nbgrader autograde`` itself, so that every way of running it gets the fix.

Wired in ``nbgrader_config.py`` (section "Submission repairs")::

    c.Autograde.exporter_class = "coursekit.submissions.sanitize.SubmissionExporter"
    c.Autograde.pre_convert_hook = coursekit.submissions.sanitize.ExpectedNotebooks()
    c.Autograde.sanitize_preprocessors = [coursekit.submissions.sanitize.RepairCells, *nbgrader's own five]

What stock nbgrader does, and what happens here instead (each case has a reference
submission in tests/fixtures/submissions and a test):

=====================  ==========================================  =========================================
submission             stock nbgrader 0.9.6                        here
=====================  ==========================================  =========================================
invalid JSON           the student's autograde fails: the folder   graded as not submitted (0), from a
                       is removed, ``nbgrader`` exits 1            placeholder; the note says why
nbformat 3             upgraded silently                           upgraded; the note says so
renamed notebook       "Skipping unknown notebook": 0 points       the copy whose cells are the notebook's
                                                                   is graded under the expected name
missing notebook       0 points, no autograded notebook, so no     0 points from a placeholder, so the
                       feedback page says why                      feedback page says why
near-miss name         "fashion_mnist.ipynb " (a space), a copy's  graded when it is the only candidate,
(or in a sub-folder)   suffix, ``week2/fashion_mnist.ipynb``: not  and named in the note ("rename it");
                       submitted, the file found is never named    several are all named, none guessed
copied graded cells    metadata of the copies set to ``{}``, then  the last copy is graded, the others run
(grade ids repeat)     SchemaTooOldError aborts the whole batch    as plain cells; no abort
deleted check cell     left "needing manual grade", no score       put back from the release in its place,
                                                                   run and scored
edited read-only cell  restored, with a log line only              restored; the note tells the student
changed cell metadata  points/locked reset, other flags kept       the release's metadata restored
late                   penalty applied, nothing tells the student  penalty applied; the note says why
cell timeout           CellTimeoutError in the cell                same, and the note explains it
one huge output line   kept whole (LimitOutput counts lines), so   cut to the limits of ``coursekit.rendering.bounds``
                       a 50 MB line reaches notebook and feedback
huge written answer    kept whole: formgrader renders it inside    cut to the limits of ``coursekit.rendering.bounds``
                       the server's event loop (a 2.5 MB answer    before grading; the note says so
                       blocks the server ~15 s)
stray ``coursekit/``   copied, ignored by the kernel (``-P``)      same, and recorded
=====================  ==========================================  =========================================

Everything found is recorded with :func:`coursekit.core.problems.record` (for the TA report) and
listed in a "Grading notes" cell at the top of the autograded notebook (so the feedback page
shows it). The notes quote grade ids and file names that the student chose: each note is
markdown-quoted (``coursekit.rendering.safehtml.quote_markdown``), so that formgrader, JupyterLab and the
feedback page show it as text. Nothing here writes to ``submitted/`` or changes the gradebook's
assignment.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import re
import unicodedata
import uuid
import warnings
from collections import defaultdict
from importlib.util import find_spec
from pathlib import Path

import nbformat
from nbconvert.exporters import NotebookExporter
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Instance

from coursekit.rendering import bounds
from coursekit.core import problems
from coursekit.core.layout import CourseLayout
from coursekit.core.notebook import STOPS_RESOURCE, flags, grade_id, is_answer_cell, is_graded, is_readonly, mark_stops
from coursekit.rendering.safehtml import quote_markdown

NOTES_MARK = "<!-- coursekit:grading-notes -->"
NOTES_TITLE = "**Grading notes** (written by the course's grader, not by you)"
RESOURCE_KEY = "coursekit_notes"  # list of note lines, passed from exporter to RepairCells
PLACEHOLDER_KEY = "coursekit_placeholder"  # True: the exporter graded a placeholder (resources, never metadata)


# --- small helpers ------------------------------------------------------------------------


def course_of(owner) -> CourseLayout:
    """The course of the running nbgrader converter, found up the ``parent`` chain of the
    exporter or preprocessor ``owner`` (nbgrader makes the converter their parent)."""
    obj = owner
    while obj is not None:
        if getattr(obj, "coursedir", None) is not None:
            return CourseLayout.of(obj.coursedir)
        obj = getattr(obj, "parent", None)
    raise RuntimeError(f"coursekit.submissions.sanitize: {type(owner).__name__} runs inside nbgrader autograde only")


def _release_notebook(course: CourseLayout, assignment: str, notebook: str, log):
    path = course.release(assignment) / f"{notebook}.ipynb"
    try:
        return nbformat.read(path, as_version=4)
    except OSError:
        log.warning("coursekit.submissions.sanitize: no release notebook %s; cell checks skipped", path)
        return None


def report(owner, resources, kind: str, cell: str | None, message: str, per_notebook: bool = True) -> None:
    """Record a problem for the TA report and queue its note for the student's notebook.
    ``owner`` is the exporter or preprocessor that found it (for the course and the log)."""
    info = resources["nbgrader"]
    problems.record(course_of(owner).autograded(info["student"], info["assignment"]), kind,
                    info["notebook"] if per_notebook else None, cell, message)
    notes = resources.setdefault(RESOURCE_KEY, [])
    if message not in notes:
        notes.append(message)
    owner.log.warning("%s/%s: %s: %s", info["student"], info["notebook"], kind, message)


def put_notes(nb, notes: list[str]) -> None:
    """Add ``notes`` (plain text) to the "Grading notes" cell at the top of ``nb`` (made if
    absent), each quoted as text: a note may quote a grade id or a file name the student chose."""
    if not notes:
        return
    for c in nb.cells:
        if c.cell_type == "markdown" and c.source.startswith(NOTES_MARK):
            known = c.source
            break
    else:
        c = nbformat.v4.new_markdown_cell(NOTES_MARK + "\n" + NOTES_TITLE + "\n")
        if nb.get("nbformat_minor", 5) >= 5:
            c.id = "grading-notes"
        else:
            c.pop("id", None)  # cell ids came with nbformat 4.5
        c.metadata["editable"] = False
        nb.cells.insert(0, c)
        known = c.source
    for note in notes:
        line = f"- {quote_markdown(note)}"
        if line not in known:
            c.source = c.source.rstrip("\n") + "\n" + line


def _unique_ids(nb) -> None:
    seen = set()
    for c in nb.cells:
        if "id" in c and c.id in seen:
            c.id = uuid.uuid4().hex[:8]
        if "id" in c:
            seen.add(c.id)


# --- reading what the student handed in -----------------------------------------------------


class Unreadable(Exception):
    """The file is not a notebook we can grade; the message says why, for the student."""


MAX_NESTING = 64    # JSON levels; a notebook has about 10, a recursion bomb thousands
MAX_CELLS = 2000    # the release has about 60


def nesting(data) -> int:
    """How deep ``data`` (parsed JSON) nests lists and objects, counted without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            if depth > MAX_NESTING:
                break
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def read_submitted(path: Path):
    """(notebook, original nbformat, repeated cell ids, damaged cells) or Unreadable. Damaged
    cells are those whose metadata was not what Jupyter writes (a grade id that is not a text,
    metadata that is not an object); their nbgrader marker is dropped (the course's cell is
    put back from the release) and their names listed."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise Unreadable("it is not a text file (not UTF-8)") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise Unreadable(f"its JSON is nested more than {MAX_NESTING} levels deep") from None
    except ValueError as err:
        where = f", line {err.lineno} column {err.colno}" if hasattr(err, "lineno") else ""
        raise Unreadable(f"it is not valid JSON ({getattr(err, 'msg', err)}{where}); "
                         "the file may have been cut off while saving or uploading") from None
    if nesting(data) > MAX_NESTING:
        raise Unreadable(f"its JSON is nested more than {MAX_NESTING} levels deep")
    if not isinstance(data, dict) or not isinstance(data.get("nbformat"), int):
        raise Unreadable("it is JSON, but not a Jupyter notebook")
    if not isinstance(data.get("metadata", {}), dict):
        raise Unreadable("its notebook metadata is damaged")
    data.get("metadata", {}).pop("coursekit", None)  # the grader's own flags are never read from a student
    version = data["nbformat"]
    cells = data.get("cells") if version >= 4 else [c for ws in data.get("worksheets", []) for c in ws.get("cells", [])]
    if not isinstance(cells, list) or not all(isinstance(c, dict) and c.get("cell_type") for c in cells):
        raise Unreadable("its cells are damaged")
    if len(cells) > MAX_CELLS:
        raise Unreadable(f"it has {len(cells):,} cells (the assignment has about 60; at most {MAX_CELLS:,} are read)")
    damaged = []
    for index, c in enumerate(cells):
        if not isinstance(c.get("metadata", {}), dict):
            c["metadata"] = {}
            damaged.append(f"cell {index + 1}")
        marker = c.get("metadata", {}).get("nbgrader")
        if marker is not None and not (isinstance(marker, dict) and isinstance(marker.get("grade_id", ""), str)):
            del c["metadata"]["nbgrader"]
            damaged.append(f"cell {index + 1}")
    ids = [c.get("id") for c in cells if isinstance(c.get("id"), str) and c.get("id")]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nbformat renumbers repeated cell ids, with a warning
            # From the checked data (what was repaired above, the grader's flags dropped).
            nb = nbformat.reads(json.dumps(data), as_version=4)
    except (Exception, RecursionError) as err:  # nbformat raises several kinds of errors for damaged notebooks
        raise Unreadable(f"Jupyter cannot read it ({type(err).__name__}: {str(err)[:200]})") from None
    for c in nb.cells:
        if not isinstance(c.get("source"), str):
            raise Unreadable("its cells are damaged")
    return nb, version, repeated, damaged


def placeholder(release_nb):
    """What is graded for a notebook that is missing or unreadable: the release with its own
    code taken out, so nothing runs but the checks, which fail at once (0 points) and
    written answers left empty (0 points)."""
    nb = copy.deepcopy(release_nb)
    nb.cells = [c for c in nb.cells if c.cell_type != "code" or is_graded(c)]
    return nb


def answer_ids(nb) -> set[str]:
    """grade ids of answer and check cells: what tells one notebook of the course from another."""
    return {grade_id(c) for c in nb.cells if grade_id(c) and (is_graded(c) or is_answer_cell(c))}


# --- the pre-convert hook: which file stands for which notebook ----------------------------


class ExpectedNotebooks:
    """``Autograde.pre_convert_hook``: make nbgrader grade every notebook of the assignment.

    nbgrader calls its pre-convert hook once per submission, before grading, with the list of
    notebook paths it is about to grade (and nothing else: not the course, not the converter),
    and grades the same list afterwards. This hook hands the list to ``SubmissionExporter``,
    which knows the course (its parent is nbgrader's converter) and appends the path of each
    expected notebook the submission lacks; it reads a renamed copy in its place, or grades a
    placeholder. The exporter attaches itself to this hook when nbgrader makes it, finding the
    hook among its converter's pre-convert hooks (chained through ``then``, as
    ``coursekit.execution.sandbox.PreflightHook`` chains them).
    """

    def __init__(self):
        self.exporter: SubmissionExporter | None = None

    def __call__(self, assignment=None, student=None, notebooks=None, **_):
        log = self.exporter.log if self.exporter is not None else logging.getLogger(__name__)
        if self.exporter is None:
            log.error("coursekit.submissions.sanitize: the pre-convert hook needs c.Autograde.exporter_class = "
                      "'coursekit.submissions.sanitize.SubmissionExporter'; missing and renamed notebooks are not handled")
            return
        try:
            self.exporter.plan_submission(notebooks)
        except Exception:  # nbgrader would log a failing hook at INFO level only
            log.exception("coursekit.submissions.sanitize: could not check the submission's notebooks")


def _importable(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# A copy's suffix a file manager or a download adds: "fashion_mnist (1)", "fashion_mnist-Copy2".
_COPY_SUFFIX = re.compile(r"(\s*\(\d+\)|[\s_-]*copy\s*\d*)$")


def notebook_key(name: str) -> str | None:
    """What a file name says it is a notebook of, with what students get wrong made equal
    (case, spaces at either end, separators, a copy's suffix, ``.ipynb.txt``); None when the name
    does not say notebook. ``notebook_key("Fashion MNIST (1).ipynb ") == notebook_key("fashion_mnist.ipynb")``."""
    text = unicodedata.normalize("NFKC", name).strip().casefold()
    for tail in (".txt", ".json"):
        if text.endswith(".ipynb" + tail):
            text = text[:-len(tail)]
    if not text.endswith(".ipynb"):
        return None
    return re.sub(r"[\W_]+", "", _COPY_SUFFIX.sub("", text[:-len(".ipynb")].strip()))


def near_misses(folder: Path, name: str) -> list[str]:
    """Files of the submission ``folder`` (relative, '/'-separated) that look meant as the
    notebook ``name`` but are not ``<name>.ipynb`` at the top: a near-miss name, or in a
    sub-folder. The folder is the intake's copy (bounded, no links)."""
    want = notebook_key(f"{name}.ipynb")
    found = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != ".ipynb_checkpoints")
        for file in sorted(files):
            rel = Path(top, file).relative_to(folder).as_posix()
            if rel != f"{name}.ipynb" and notebook_key(file) == want:
                found.append(rel)
    return found


def _quoted(rel: str) -> str:
    from coursekit.submissions.intake import shown

    return f"'{shown(rel, 120)}'"


def _best_match(release, unknown: dict, used: set) -> str | None:
    """The unknown notebook whose answer/check cells are most like ``release``'s (at least half)."""
    want = answer_ids(release)
    scored = []
    for stem, path in unknown.items():
        if stem in used:
            continue
        try:
            nb = read_submitted(Path(path))[0]
        except Unreadable:
            continue
        overlap = len(want & answer_ids(nb))
        if want and overlap * 2 >= len(want):
            scored.append((overlap, os.path.getmtime(path), stem))
    return max(scored)[2] if scored else None


# --- the exporter: tolerant reading (before grading), output checks (after) -----------------


class SubmissionExporter(NotebookExporter):
    """nbgrader's notebook exporter, reading submissions tolerantly and checking the result.

    Before grading (nbgrader's "sanitize" pass, input from ``submitted/``): decides, through the
    pre-convert hook (``ExpectedNotebooks``), which file stands for each expected notebook; reads
    it, upgrades old formats, and stands in a placeholder for a notebook that is missing or cannot
    be read. After grading (the "autograde" pass): notes cells that hit the time limit, and cuts
    outputs to ``limits`` (``coursekit.rendering.bounds``).

    State lives on this object, which nbgrader makes once per command: ``plans`` maps the path of
    each expected notebook to the file to read for it and why.
    """

    limits = Instance(bounds.Limits, args=(), help="coursekit.rendering.bounds.Limits (nbgrader_config.py: RENDER_LIMITS)").tag(config=True)

    def __init__(self, **kw):
        super().__init__(**kw)
        from coursekit.submissions import intake

        converter = self.parent
        if isinstance(converter, intake.Autograde) and not isinstance(converter, intake.IntakeAutograde) \
                and intake.Intake(parent=converter).enabled:
            raise SystemExit(
                "coursekit: refusing to grade: nbgrader autograde is not reading submissions through the intake "
                f"({type(converter).__name__} instead of coursekit.submissions.intake.IntakeAutograde). nbgrader_config.py "
                "must call coursekit.pipeline.install() (which calls coursekit.submissions.intake.install()); if it does, this nbgrader version no longer lets it (see "
                "coursekit/submissions/intake.py). c.Intake.enabled = False grades as stock nbgrader does (links followed).")
        self.plans: dict[str, tuple[str | None, str]] = {}  # expected path -> (path to read, renamed from)
        self.found_as: dict[str, str] = {}  # expected path -> what the student is told about the file found for it
        hook = getattr(self.parent, "pre_convert_hook", None)
        while hook is not None and not isinstance(hook, ExpectedNotebooks):
            hook = getattr(hook, "then", None)
        if hook is not None:
            hook.exporter = self

    def plan_submission(self, notebooks: list) -> None:
        """For the submission whose notebook paths are ``notebooks`` (nbgrader's list, which it
        grades after the hook): append every expected notebook that is missing, matched to a
        renamed copy when one has its cells; record stray notebooks, and files named like a
        package the grader imports (``coursekit.py``, ``numpy/``)."""
        if not notebooks:
            return
        course = course_of(self)
        folder = Path(notebooks[0]).parent
        assignment, student = folder.name, folder.parent.name
        with course.gradebook() as gb:
            expected = [nb.name for nb in gb.find_assignment(assignment).notebooks]
        # (the intake lists every expected notebook when none is at the top: such a path is no file)
        present = {Path(p).stem: p for p in notebooks if Path(p).is_file()}
        unknown = {stem: p for stem, p in present.items() if stem not in expected}
        used = set()
        for name in expected:
            path = str(folder / f"{name}.ipynb")
            if name in present:
                self.plans[path] = (path, "")
                continue
            release = _release_notebook(course, assignment, name, self.log)
            best = _best_match(release, unknown, used) if release is not None else None
            candidates = [c for c in near_misses(folder, name) if not ("/" not in c and Path(c).stem in used)]
            if best:
                used.add(best)
                self.plans[path] = (unknown[best], f"{best}.ipynb")
            elif len(candidates) == 1:  # the one file meant as this notebook: graded, and the student told
                found = candidates[0]
                used.add(Path(found).stem if "/" not in found else found)
                where = "in a sub-folder" if "/" in found else f"a near-miss of {name}.ipynb"
                self.plans[path] = (str(folder / found), found)
                self.found_as[path] = (f"There was no {name}.ipynb at the top of your submission; found "
                                       f"{_quoted(found)} ({where}) and graded it as {name}.ipynb. Rename it "
                                       f"to exactly {name}.ipynb, at the top of your submission.")
            else:
                self.plans[path] = (None, "")
                if candidates:
                    self.found_as[path] = (f" Found {', '.join(map(_quoted, candidates[:5]))}, which look meant as "
                                           f"{name}.ipynb; as there is more than one, none was graded: keep one, "
                                           f"named exactly {name}.ipynb, at the top of your submission.")
            if path not in notebooks:
                notebooks.append(path)
        dest = course.autograded(student, assignment)
        for stem, p in sorted(unknown.items()):
            if stem not in used:
                problems.record(dest, "stray-file", None, None,
                                f"{stem}.ipynb is not one of this assignment's notebooks "
                                f"({', '.join(n + '.ipynb' for n in expected)}); it was not graded")
        for entry in sorted(folder.iterdir()):
            module = entry.stem if entry.suffix == ".py" else entry.name if entry.is_dir() else None
            if module and module.isidentifier() and _importable(module):
                problems.record(dest, "stray-file", None, None,
                                f"'{entry.name}' in your submission has the name of the Python package "
                                f"'{module}' that the grader uses; it was ignored (the checks always use "
                                "the course's own packages)")

    def from_filename(self, filename, resources=None, **kw):
        if not getattr(self.parent, "_sanitizing", False):
            return super().from_filename(filename, resources=resources, **kw)
        resources = resources if resources is not None else {}
        course = course_of(self)
        info = resources["nbgrader"]
        name = info["notebook"]
        read_path, renamed_from = self.plans.pop(str(filename), (str(filename), ""))
        nb = None
        if read_path is not None and Path(read_path).is_file():
            try:
                nb, version, repeated, damaged = read_submitted(Path(read_path))
            except Unreadable as why:
                shown = renamed_from or f"{name}.ipynb"
                report(self, resources, "invalid-notebook", None,
                       f"Your file {shown} could not be read as a notebook: {why}. It was graded as "
                       "not submitted (0 points). Open it in Jupyter before you hand it in.")
            else:
                if renamed_from:
                    report(self, resources, "renamed-notebook", None, self.found_as.pop(str(filename), None) or
                           f"There was no {name}.ipynb in your submission; {renamed_from} has its cells, "
                           f"so it was graded as {name}.ipynb. Please keep the original file name.")
                if version < 4:
                    report(self, resources, "old-nbformat", None,
                           f"{name}.ipynb was saved in an old notebook format (nbformat {version}); "
                           "it was converted to nbformat 4 and graded as usual.")
                if repeated:
                    report(self, resources, "duplicate-cell", None,
                           f"{len(repeated)} cell id(s) appear more than once in {name}.ipynb "
                           f"({', '.join(repeated[:5])}); the copies were given new ids.")
                if damaged:
                    report(self, resources, "tampered-cell", None,
                           f"The course settings of {len(damaged)} cell(s) of {name}.ipynb were damaged "
                           f"({', '.join(damaged[:5])}: a grade id that is not a name, or settings that are "
                           "not a list of fields); the course's own cells were used in their place.")
        elif self._refused(course, info, name):
            report(self, resources, "missing-notebook", None,
                   f"{name}.ipynb was not accepted (see above): it was graded as not submitted, 0 points for "
                   "this notebook.")
        else:
            report(self, resources, "missing-notebook", None,
                   f"{name}.ipynb was not in your submission: 0 points for this notebook."
                   + self.found_as.pop(str(filename), "") + self._cut(course, info))
        if nb is None:
            release = _release_notebook(course, info["assignment"], name, self.log)
            if release is None:
                raise RuntimeError(f"no release notebook to grade in place of {name}.ipynb")
            nb = placeholder(release)
            resources[PLACEHOLDER_KEY] = True
        path = os.path.dirname(filename)
        resources.setdefault("metadata", {})
        resources["metadata"].update({"name": name, "path": path, "modified_date": ""})
        return self.from_notebook_node(nb, resources=resources, **kw)

    @staticmethod
    def _cut(course: CourseLayout, info: dict) -> str:
        """What to add when the intake's limits cut the submission (its note names the limit)."""
        found = problems.load(course.autograded(info["student"], info["assignment"]))
        if any(p["kind"] == "refused-file" and "c.Intake.max_" in p["message"] for p in found):
            return (" Your submission was over the grader's limits (see the note on what was not accepted): "
                    "notebooks at its top are read first, so put it there, named exactly as handed out.")
        return ""

    @staticmethod
    def _refused(course: CourseLayout, info: dict, name: str) -> bool:
        """Whether the intake refused the student's file for notebook ``name``."""
        found = problems.load(course.autograded(info["student"], info["assignment"]))
        return any(p["kind"] == "refused-file" and p["notebook"] == name for p in found)

    def _preprocess(self, nb, resources):
        nb, resources = super()._preprocess(nb, resources)
        if not getattr(self.parent, "_sanitizing", True):
            self._after_grading(nb, resources)
            if self._last_notebook(resources):
                self._seal(resources)
        return nb, resources

    def _last_notebook(self, resources) -> bool:
        """Whether autograde has just graded the submission's last notebook (nbgrader's list, to
        which ExpectedNotebooks added the missing ones)."""
        listed = list(getattr(self.parent, "notebooks", None) or [])
        return not listed or Path(listed[-1]).stem == resources["nbgrader"]["notebook"]

    def _seal(self, resources) -> None:
        """The end of autograde for this submission, however it was started: its record
        (coursekit.core.problems) is written whole, with its lateness from the gradebook."""
        from nbgrader.api import Gradebook, MissingEntry

        info = resources["nbgrader"]
        seconds = 0.0
        with contextlib.suppress(MissingEntry), Gradebook(info["db_url"]) as gb:
            seconds = float(gb.find_submission(info["assignment"], info["student"]).total_seconds_late or 0)
        problems.seal(course_of(self).autograded(info["student"], info["assignment"]), info["student"],
                      info["assignment"], seconds)

    def _after_grading(self, nb, resources) -> None:
        resources[RESOURCE_KEY] = []
        # The grader's stops, as coursekit.transfer.split_execute noted them (never read from the outputs):
        # marked in the notebook, recorded once (kind, notebook, cell) in coursekit.core.notebook.STOPS's
        # words; the note the student reads is that entry, with its cell.
        for stop in mark_stops(nb, resources.pop(STOPS_RESOURCE, [])):
            report(self, resources, stop.kind, stop.where, stop.message)
            notes = resources[RESOURCE_KEY]
            notes[notes.index(stop.message)] = f"{stop.where}: {stop.message}"
        for cut in bounds.cut_outputs(nb, self.limits):
            report(self, resources, "too-long", cut.where, cut.note())
        put_notes(nb, resources.pop(RESOURCE_KEY))


# --- the sanitize preprocessor: cells ------------------------------------------------------


class RepairCells(NbGraderPreprocessor):
    """First of nbgrader's sanitize preprocessors: make the notebook's course cells match the
    release before nbgrader's own checks look at them.

    - a cell whose nbgrader marker names no cell of the assignment becomes a plain cell;
    - cells copied with their marker (grade ids repeat): the last copy keeps it, the others
      become plain cells (nbgrader would abort the whole batch);
    - the release's nbgrader metadata is put back on every course cell (points, locked...);
    - read-only cells that were edited are reported (nbgrader's OverwriteCells restores them);
    - read-only and graded cells that were deleted are put back from the release, after the
      cell that precedes them there (nbgrader would leave their points "to be graded");
    - a late submission is reported with the penalty the late policy takes;
    - markdown and raw cells over the size limits are cut (``coursekit.rendering.bounds``), so that no
      page renders a 2.5 MB written answer.
    Everything found is recorded and listed in the notebook's "Grading notes" cell.

    Why not nbgrader's own ``OverwriteCells.add_missing_cells`` (0.9.6) for deleted cells
    (tests/submissions/test_sanitize.py shows each point): it puts back graded cells only, so a deleted
    read-only cell that is not graded (the ``setup`` cell the checks depend on, a prompt) stays
    missing; it places a cell after the previous *source* cell, looked up among the graded and
    answer cells only, so deleting a check that follows a read-only prompt (``f2_why_split``
    after ``f2_prompt``) raises KeyError and the whole submission fails; and it prepends a
    "This cell was missing" line to the restored source, which the student's feedback would
    show inside the check. It is therefore left off (its default), and step 4 below does it.
    """

    limits = Instance(bounds.Limits, args=(), help="coursekit.rendering.bounds.Limits (nbgrader_config.py: RENDER_LIMITS)").tag(config=True)

    def preprocess(self, nb, resources):
        course = course_of(self)
        info = resources["nbgrader"]
        if not resources.get(PLACEHOLDER_KEY):
            release = _release_notebook(course, info["assignment"], info["notebook"], self.log)
            if release is not None:
                self.match_release(nb, release, resources)
        for cut in bounds.cut_sources(nb, self.limits, readonly=False):  # read-only cells are restored next
            report(self, resources, "too-long", cut.where, cut.note())
        self.check_late(resources)
        _unique_ids(nb)
        put_notes(nb, resources.pop(RESOURCE_KEY, []))
        return nb, resources

    def match_release(self, nb, release, resources) -> None:
        rel = {grade_id(c): c for c in release.cells if grade_id(c)}
        order = [grade_id(c) for c in release.cells if grade_id(c)]

        # 1. markers that name no cell of this notebook
        for c in nb.cells:
            if "nbgrader" not in c.metadata:
                continue
            gid = grade_id(c)
            if gid not in rel:
                was = flags(c)
                del c.metadata["nbgrader"]
                if gid and (was.get("grade") or was.get("solution") or was.get("locked")):
                    report(self, resources, "tampered-cell", gid,
                           f"A cell is marked as course cell '{gid}', which this notebook does not have; "
                           "it was run as an ordinary cell.")

        # 2. copies of course cells
        copies = defaultdict(list)
        for c in nb.cells:
            if grade_id(c):
                copies[grade_id(c)].append(c)
        for gid, cells in copies.items():
            if len(cells) > 1:
                for extra in cells[:-1]:
                    del extra.metadata["nbgrader"]
                    extra.metadata.pop("deletable", None)
                    extra.metadata.pop("editable", None)
                report(self, resources, "duplicate-cell", gid,
                       f"The cell '{gid}' appears {len(cells)} times (copied cells keep the original's "
                       "marker). The last copy was graded; the others ran as ordinary cells.")

        # 3. metadata and content of the course cells that are there
        present = {grade_id(c): c for c in nb.cells if grade_id(c)}
        for gid, c in present.items():
            want = rel[gid].metadata["nbgrader"]
            have = flags(c)
            changed = sorted(k for k in ("grade", "solution", "locked", "points", "task")
                             if have.get(k, False) != want.get(k, False))
            if changed or have.get("schema_version") != want.get("schema_version"):
                c.metadata["nbgrader"] = copy.deepcopy(want)
                if changed:
                    report(self, resources, "tampered-cell", gid,
                           f"The settings ({', '.join(changed)}) of the cell '{gid}' had been changed; "
                           "the course's settings were put back.")
            if is_readonly(rel[gid]) and (c.source != rel[gid].source or c.cell_type != rel[gid].cell_type):
                report(self, resources, "tampered-cell", gid,
                       f"The read-only cell '{gid}' had been edited. The original was restored and run "
                       "in its place.")

        # 4. deleted course cells: put back after the cell that precedes them in the release
        for position, gid in enumerate(order):
            if gid in present or not (is_readonly(rel[gid]) or is_graded(rel[gid])):
                continue
            restored = copy.deepcopy(rel[gid])
            if nb.get("nbformat_minor", 5) < 5:
                restored.pop("id", None)  # cell ids came with nbformat 4.5
            before = next((present[g] for g in reversed(order[:position]) if g in present), None)
            at = nb.cells.index(before) + 1 if before is not None else 0
            nb.cells.insert(at, restored)
            present[gid] = restored
            if is_graded(restored) or restored.cell_type == "code":
                what = ("written-answer cell" if is_answer_cell(restored) else
                        "check cell" if is_graded(restored) else "read-only cell")
                report(self, resources, "deleted-test-cell", gid,
                       f"The {what} '{gid}' was missing from your notebook. The grader put it back in "
                       "its place and ran it" + (" (an empty answer scores 0)." if is_answer_cell(restored) else "."))

    def check_late(self, resources) -> None:
        from nbgrader.api import Gradebook
        from nbgrader.preprocessors import AssignLatePenalties

        info = resources["nbgrader"]
        with Gradebook(info["db_url"]) as gb:
            sub = gb.find_submission(info["assignment"], info["student"])
            seconds, due, when = sub.total_seconds_late or 0, sub.duedate, sub.timestamp
        if seconds <= 0:
            return
        plugin = AssignLatePenalties(parent=self).plugin_class(parent=self)
        plugin.log = logging.getLogger("coursekit.submissions.sanitize.late")  # not the "penalty of 100 points" log line
        penalty = plugin.late_submission_penalty(info["student"], 100.0, seconds)
        days, rest = divmod(int(seconds), 86400)
        late = f"{days} d {rest // 3600} h {rest % 3600 // 60} min"
        taken = f"{penalty:g} % of each notebook's score" if penalty else "nothing"
        report(self, resources, "late", None,
               f"Submitted {late} after the due date ({due:%Y-%m-%d %H:%M} UTC; submitted "
               f"{when:%Y-%m-%d %H:%M} UTC): {math.ceil(seconds / 86400)} started day(s) late, so the late "
               f"policy takes {taken}.", per_notebook=False)
