"""Similar answers in a class: a page that tells a TA which pairs of submissions to read side by side.

It is triage for a person, never a penalty: two students who follow the same tutorial write
similar code, and only a person who reads both answers can tell a shared idea from a copy.

    python -m coursekit.term.similarity week2       # -> reports/week2/similarity.html

What is compared. For each student, the cells of their *autograded* notebooks (what the intake
accepted and the repairs left; a submission that was never autograded is listed as not
compared) that the student wrote: answer cells and cells they added, never read-only cells or
checks. Every cell is fingerprinted on its own, so cells moved around a notebook, or answers
moved between cells, still match; a pair of students is compared over all of their cells.

How (copydetect's fingerprinting, Schleimer, Wilkerson and Aiken's winnowing):

- code is tokenised with pygments (``copydetect.utils.filter_code``): comments and white space
  are dropped, variable, attribute and function names become ``V``/``F``, strings ``S``, so
  renamed variables and rewritten comments change nothing; written answers (markdown) are
  compared as their words, lower-cased;
- every run of ``NOISE_T`` characters of that text is hashed (k-grams); winnowing keeps one hash
  per window of ``GUARANTEE_T - NOISE_T + 1``, so that every shared run of ``GUARANTEE_T``
  characters is found (here the window is 1: every k-gram, the same scores at every run);
- boilerplate: every k-gram of the course's own text, the released notebooks and the
  instructor's (solutions, checks, locked cells), is removed before comparing. In a templated
  assignment most of a correct answer *is* the tutorial's code; what is left is what a student
  wrote differently, and that is what two honest students rarely share;
- ``share`` of a student in a pair: how much of their own (non-boilerplate) text is found in the
  other's; the pair's score is the larger share, so a student who copied part of a longer
  submission is found too. A pair is flagged when its score is at least the threshold and the
  shared text is at least ``MIN_SHARED`` characters (a shared one-token slip, such as
  ``axis=0``, is a common misconception, not a copy).

The page is written by this module's template (``templates/similarity.html.j2``, autoescaped,
with the report's Content-Security-Policy), never by copydetect's own HTML report, which puts
file names and its settings into the page unescaped. Both answers are shown side by side with
the matching parts marked: every character is escaped, then the matches are wrapped.
"""

from __future__ import annotations

import argparse
import io
import re
import statistics
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path

import nbformat
import numpy as np
from copydetect import CodeFingerprint, compare_files
from copydetect.utils import get_copied_slices
from markupsafe import Markup, escape

from coursekit.rendering import bounds, pages
from coursekit.submissions import intake
from coursekit.core.layout import CourseLayout
from coursekit.core.notebook import grade_id, is_answer_cell, is_check_cell, is_readonly
from coursekit.term.report import SIMILARITY_PAGE as REPORT_NAME
from coursekit.submissions.sanitize import NOTES_MARK

NOISE_T = 25        # k: the shortest shared run of tokenised text that counts (copydetect's default)
# Every shared run at least this long is found. Equal to NOISE_T: the winnowing window is 1, every
# k-gram is kept. copydetect hashes with Python's hash(), salted per process, so a wider window
# would keep different k-grams, and give slightly different scores, at every run; a class's
# answers are small enough for every k-gram to be compared.
GUARANTEE_T = NOISE_T
# Calibrated on the reference class (tests/term/test_similarity.py::test_calibration_on_the_reference_class
# prints the numbers): the 15 honest reference submissions (105 pairs) share nothing once the
# course's code is boilerplate (highest score 0.00), the planted copy (names renamed, comments
# rewritten, functions and cells reordered) scores 0.94; without the instructor's notebooks as
# boilerplate the honest pairs score up to 1.00 and 91 of 105 would be flagged. The reference
# class is made from the instructor's solution, so it bounds the threshold from below only: 0.5
# is "half of one student's own text is in the other's", a copy of most of an answer.
THRESHOLD = 0.5
MIN_SHARED = 60     # characters of tokenised text (about four lines of code) a flagged pair shares at least
PAGE_PAIRS = 30     # pairs shown side by side on the page
TABLE_PAIRS = 300   # pairs listed in the table (those sharing something, highest first); the rest are counted

CODE, WRITTEN = "code", "written"
_WORD = re.compile(r"\w+")


# --- fingerprints ----------------------------------------------------------------------------


@dataclass
class Piece:
    """One cell a student wrote, fingerprinted."""

    student: str
    notebook: str
    cell: str          # grade id, or "added cell <n>"
    kind: str          # CODE or WRITTEN
    text: str          # the cell's source, as written
    fingerprint: CodeFingerprint = field(repr=False)
    raw_index: np.ndarray | None = field(default=None, repr=False)  # written: normalised -> source position

    @property
    def coverage(self) -> float:
        return float(self.fingerprint.token_coverage)

    def to_source(self, slices) -> list[tuple[int, int]]:
        """copydetect's slices (start row, end row) as (start, end) positions in ``text``."""
        spans = []
        for start, end in zip(*np.asarray(slices, dtype=int).reshape(2, -1)):
            if self.raw_index is not None:
                if end <= start or start >= len(self.raw_index):
                    continue
                start, end = int(self.raw_index[start]), int(self.raw_index[min(end, len(self.raw_index)) - 1]) + 1
            spans.append((max(0, int(start)), min(len(self.text), int(end))))
        return merge_spans(spans)


def normalised_words(text: str) -> tuple[str, np.ndarray]:
    """A written answer as its lower-cased words joined by single spaces, and for each character
    of that the position in ``text`` it comes from (copydetect does not tokenise prose)."""
    out, index = [], []
    for m in _WORD.finditer(text):
        if out:
            out.append(" ")
            index.append(m.start())
        word = m.group().lower()
        out.append(word if len(word) == len(m.group()) else m.group())  # 'İ'.lower() is 2 characters
        index.extend(range(m.start(), m.end()))
    return "".join(out), np.array(index, dtype=int)


def fingerprint(text: str, kind: str, boilerplate=None, window: int | None = None) -> tuple[CodeFingerprint, np.ndarray | None]:
    """copydetect's fingerprint of one cell (``window`` 1: every k-gram, as for boilerplate)."""
    window = window or GUARANTEE_T - NOISE_T + 1
    if kind == CODE:
        return CodeFingerprint("cell.py", NOISE_T, window, boilerplate, filter=True, language="python",
                               fp=io.StringIO(text)), None
    words, index = normalised_words(text)
    return CodeFingerprint("answer.txt", NOISE_T, window, boilerplate, filter=False, fp=io.StringIO(words)), index


def cell_kind(cell) -> str | None:
    if cell.get("cell_type") == "code":
        return CODE
    if cell.get("cell_type") == "markdown":
        return WRITTEN
    return None


def _text(source) -> str:
    return "".join(source) if isinstance(source, list) else (source if isinstance(source, str) else "")


def course_notebooks(layout: CourseLayout, assignment: str) -> list[Path]:
    """The course's own text of the assignment: its released and its instructor's notebooks."""
    return sorted(layout.release(assignment).glob("*.ipynb")) + sorted(layout.source(assignment).glob("*.ipynb"))


def boilerplate_hashes(layout: CourseLayout, assignment: str) -> dict[str, np.ndarray]:
    """Every k-gram hash of the course's own cells (release and source: stubs, solutions,
    checks, locked cells, instructions), per kind."""
    found: dict[str, list] = {CODE: [], WRITTEN: []}
    for path in course_notebooks(layout, assignment):
        for cell in nbformat.read(path, as_version=4).cells:
            kind = cell_kind(cell)
            if kind is not None:
                fp, _ = fingerprint(_text(cell.get("source")), kind, window=1)
                found[kind].extend(fp.hashes)
    return {kind: np.unique(np.array(hashes, dtype=np.int64)) for kind, hashes in found.items()}


def _grading_notes(cell) -> bool:
    """The "Grading notes" cell the course's grader puts at the top of an autograded notebook
    (coursekit.submissions.sanitize): the grader's words, not the student's. (A student who starts a cell of
    their own with the mark hides only that added cell, never an answer cell.)"""
    return cell.get("cell_type") == "markdown" and not is_answer_cell(cell) \
        and _text(cell.get("source")).startswith(NOTES_MARK)


def notebook_names(layout: CourseLayout, assignment: str) -> list[str]:
    return sorted(p.stem for p in layout.release(assignment).glob("*.ipynb"))


def student_pieces(layout: CourseLayout, assignment: str, student: str, boilerplate: dict) -> list[Piece] | None:
    """The cells ``student`` wrote, fingerprinted; None when there is no autograded notebook."""
    folder = layout.autograded(student, assignment)
    pieces, read_any = [], False
    for name in notebook_names(layout, assignment):
        try:
            nb = nbformat.read(folder / f"{name}.ipynb", as_version=4)
        except Exception:  # missing or unreadable: the class report lists why
            continue
        read_any = True
        bounds.cut_sources(nb, code=True, readonly=False)  # the same limits as every page
        for index, cell in enumerate(nb.cells):
            kind = cell_kind(cell)
            if kind is None or is_readonly(cell) or is_check_cell(cell) or _grading_notes(cell):
                continue
            text = _text(cell.get("source"))
            fp, raw_index = fingerprint(text, kind, boilerplate[kind])
            if fp.hashes:
                pieces.append(Piece(student, name, grade_id(cell) or f"added cell {index + 1}", kind, text, fp,
                                    raw_index))
    return pieces if read_any else None


# --- comparing -------------------------------------------------------------------------------


@dataclass
class Match:
    """Two cells that share text, with the shared parts as (start, end) positions in each."""

    a: Piece
    b: Piece
    spans_a: list[tuple[int, int]]
    spans_b: list[tuple[int, int]]
    shared: int


@dataclass
class Pair:
    a: str
    b: str
    share_a: float   # of a's own text, the part found in b's
    share_b: float
    shared: int      # characters of tokenised text found in both (the smaller side's count)
    matches: list[Match] = field(default_factory=list)
    flagged: bool = False

    @property
    def score(self) -> float:
        return max(self.share_a, self.share_b)


def merge_spans(spans) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def _hash_union(pieces: list[Piece]) -> dict[str, set]:
    union: dict[str, set] = {CODE: set(), WRITTEN: set()}
    for p in pieces:
        union[p.kind] |= p.fingerprint.hashes
    return union


def _found_in(pieces: list[Piece], other: dict[str, set]) -> float:
    """How many characters of ``pieces``' tokenised text are covered by fingerprints in ``other``."""
    total = 0
    for p in pieces:
        common = p.fingerprint.hashes & other[p.kind]
        if common:
            idx = np.concatenate([np.array(p.fingerprint.hash_idx[h]) for h in common])
            slices = get_copied_slices(idx, NOISE_T)
            total += int(np.sum(slices[1] - slices[0]))
    return total


def compare(a: str, pieces_a: list[Piece], b: str, pieces_b: list[Piece], unions: dict | None = None) -> Pair:
    """The pair's shares (cells compared whatever their order or place)."""
    ua = unions[a] if unions else _hash_union(pieces_a)
    ub = unions[b] if unions else _hash_union(pieces_b)
    found_a, found_b = _found_in(pieces_a, ub), _found_in(pieces_b, ua)
    cover_a, cover_b = sum(p.coverage for p in pieces_a), sum(p.coverage for p in pieces_b)
    return Pair(a, b, found_a / cover_a if cover_a else 0.0, found_b / cover_b if cover_b else 0.0,
                int(min(found_a, found_b)))


def cell_matches(pieces_a: list[Piece], pieces_b: list[Piece]) -> list[Match]:
    """Which cell of one student shares text with which cell of the other (copydetect's
    ``compare_files`` on every pair of cells of the same kind), most shared first."""
    matches = []
    for pa in pieces_a:
        for pb in pieces_b:
            if pa.kind != pb.kind or not (pa.fingerprint.hashes & pb.fingerprint.hashes):
                continue
            overlap, _, (slices_a, slices_b) = compare_files(pa.fingerprint, pb.fingerprint)
            if overlap:
                matches.append(Match(pa, pb, pa.to_source(slices_a), pb.to_source(slices_b), int(overlap)))
    return sorted(matches, key=lambda m: (-m.shared, m.a.notebook, m.a.cell, m.b.cell))


@dataclass
class ClassComparison:
    assignment: str
    students: list[str]                 # compared
    not_compared: list[str]             # submitted, but no autograded notebook to read
    pairs: list[Pair]                   # every pair, highest score first
    threshold: float
    pieces: dict[str, list[Piece]] = field(repr=False, default_factory=dict)

    @property
    def flagged(self) -> list[Pair]:
        return [p for p in self.pairs if p.flagged]


def compare_class(layout: CourseLayout, assignment: str, threshold: float | None = None,
                  students: list[str] | None = None) -> ClassComparison:
    threshold = THRESHOLD if threshold is None else threshold
    boilerplate = boilerplate_hashes(layout, assignment)
    candidates = students if students is not None else \
        [s for s in layout.students(assignment) if intake.id_problem(s) is None]
    pieces, not_compared = {}, []
    for student in candidates:
        found = student_pieces(layout, assignment, student, boilerplate)
        if found is None:
            not_compared.append(student)
        else:
            pieces[student] = found
    unions = {s: _hash_union(p) for s, p in pieces.items()}
    pairs = []
    for a, b in combinations(sorted(pieces), 2):
        pair = compare(a, pieces[a], b, pieces[b], unions)
        pair.flagged = pair.score >= threshold and pair.shared >= MIN_SHARED
        pairs.append(pair)
    pairs.sort(key=lambda p: (-p.flagged, -p.score, -p.shared, p.a, p.b))
    return ClassComparison(assignment, sorted(pieces), not_compared, pairs, threshold, pieces)


# --- the page --------------------------------------------------------------------------------


def highlight(text: str, spans: list[tuple[int, int]]) -> Markup:
    """``text`` with every character escaped, then the ``spans`` wrapped in <mark>."""
    out, at = [], 0
    for start, end in merge_spans(spans):
        out.append(escape(text[at:start]))
        out.append(Markup("<mark>%s</mark>") % text[start:end])  # % escapes its argument
        at = end
    out.append(escape(text[at:]))
    return Markup("").join(out)


def student_names(layout: CourseLayout) -> dict[str, str]:
    """student id -> "First Last" from the gradebook (hostile text: shown escaped)."""
    try:
        with layout.gradebook() as gb:
            return {s.id: " ".join(n for n in (s.first_name, s.last_name) if n) for s in gb.students}
    except Exception:  # no gradebook yet: ids only
        return {}


def baseline(pairs: list[Pair]) -> list[tuple[str, str]]:
    scores = sorted(p.score for p in pairs)
    if not scores:
        return []
    return [("pairs compared", str(len(scores))), ("median score", f"{statistics.median(scores):.2f}"),
            ("90th percentile", f"{scores[int(0.9 * (len(scores) - 1))]:.2f}"), ("highest", f"{scores[-1]:.2f}")]


def render(comparison: ClassComparison, names: dict[str, str], generated: datetime, course_id: str = "") -> str:
    shown = [p for p in comparison.pairs if p.shared > 0]
    detailed = []
    for pair in shown[:PAGE_PAIRS]:
        pair.matches = cell_matches(comparison.pieces[pair.a], comparison.pieces[pair.b])
        detailed.append((pair, [(m, highlight(m.a.text, m.spans_a), highlight(m.b.text, m.spans_b))
                                for m in pair.matches]))
    return pages.render(
        "similarity.html.j2", csp=pages.REPORT_CSP, comparison=comparison, pairs=shown[:TABLE_PAIRS],
        not_listed=len(shown[TABLE_PAIRS:]), detailed=detailed,
        names=names, generated=generated, course_id=course_id, baseline=baseline(comparison.pairs),
        settings={"noise": NOISE_T, "guarantee": GUARANTEE_T, "min_shared": MIN_SHARED})


def report_folder(layout: CourseLayout, assignment: str) -> Path:
    """Where the class report and this page go: reports/<assignment>/."""
    return layout.root / "reports" / assignment


def write_report(layout: CourseLayout, assignment: str, out_dir: Path | None = None,
                 threshold: float | None = None) -> Path:
    """Compare the class's answers and write ``similarity.html`` (default: beside the class
    report, reports/<assignment>/); returns the page's path."""
    out_dir = Path(out_dir) if out_dir is not None else report_folder(layout, assignment)
    comparison = compare_class(layout, assignment, threshold)
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / REPORT_NAME
    page.write_text(render(comparison, student_names(layout), datetime.now(timezone.utc), layout.course_id),
                    encoding="utf-8")
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the similarity page of an assignment (after autograde).")
    parser.add_argument("assignment", nargs="?", default="week2")
    parser.add_argument("--out", help="folder for similarity.html (default: reports/<assignment>)")
    parser.add_argument("--threshold", type=float, help=f"pair score to flag (default {THRESHOLD})")
    args = parser.parse_args(argv)
    page = write_report(CourseLayout.load(), args.assignment, Path(args.out).resolve() if args.out else None,
                        args.threshold)
    print(f"similarity page of {args.assignment}: {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
