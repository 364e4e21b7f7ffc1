"""Item analysis of an assignment, for the class report: which checks and questions do their job.

From the report's ``ClassData`` (the gradebook's points per cell, ``coursekit.term.report.collect``):

- per **check cell**: its *difficulty*, the pass rate (share of submissions with the cell's full
  points) and the mean share of its points; its *discrimination*, the Pearson correlation of the
  cell's points with the **rest score**, the submission's autograded points minus this cell's
  (for a one-or-nothing check that is the point-biserial correlation). The rest score, not the
  total: the total contains the cell itself, which makes every cell look discriminating.
  The autograded part, not the final score: written answers count only once a TA has marked them,
  and the late penalty says nothing about the questions.
  A check is flagged when its discrimination is negative (students who do well elsewhere fail it
  more often: a check that is wrong, or that a good answer can trip) or near zero, |r| < ``NEAR_ZERO``
  (it tells nothing about the rest: it may test something unrelated, or be passed or failed by
  chance). When every submission scores the same on the cell, or the same rest score, r is
  undefined: shown as such, and flagged only as "no spread" (nothing to learn from this class);
- per **question**: the spread of its points over the submissions (mean, standard deviation,
  minimum, quartiles, maximum);
- per **written answer**: how many are marked and waiting, and the spread of the marks given.
  The mean mark *per TA* would need to know who gave each mark: nbgrader's gradebook (0.9) does
  not record it (its ``Grade`` has no grader), so the report shows the spread and says so.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass

NEAR_ZERO = 0.1  # |discrimination| below this: the check says (almost) nothing about the rest of the score

FLAG_NEGATIVE = "negative"
FLAG_NEAR_ZERO = "near zero"
FLAG_NO_SPREAD = "no spread"


def pearson(xs: list[float], ys: list[float]) -> float | None:
    """Pearson's r; None when either side does not vary (or fewer than 2 values)."""
    n = len(xs)
    if n < 2 or n != len(ys):
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx <= 1e-12 or syy <= 1e-12:
        return None
    return sxy / math.sqrt(sxx * syy)


def flag_of(r: float | None) -> str:
    if r is None:
        return FLAG_NO_SPREAD
    if r < 0:
        return FLAG_NEGATIVE
    if abs(r) < NEAR_ZERO:
        return FLAG_NEAR_ZERO
    return ""


@dataclass
class CheckItem:
    notebook: str
    grade_id: str
    question: str
    max_score: float
    n: int
    mean: float
    pass_rate: float          # share of submissions with the cell's full points
    discrimination: float | None  # r(cell points, autograded points minus this cell's)
    flag: str                 # "", FLAG_NEGATIVE, FLAG_NEAR_ZERO, FLAG_NO_SPREAD

    @property
    def difficulty(self) -> float:
        """Mean share of the cell's points (for a one-or-nothing check, the pass rate)."""
        return self.mean / self.max_score if self.max_score else 0.0


@dataclass
class Spread:
    name: str
    max_score: float
    n: int
    mean: float
    sd: float
    min: float
    q1: float
    median: float
    q3: float
    max: float


@dataclass
class WrittenItem:
    notebook: str
    grade_id: str
    question: str
    max_score: float
    marked: int
    waiting: int
    spread: Spread | None     # of the marks given; None before any mark


@dataclass
class ItemAnalysis:
    checks: list[CheckItem]
    questions: list[Spread]
    written: list[WrittenItem]
    per_ta: bool = False      # True once the gradebook records who marked what (nbgrader 0.9 does not)


def spread(name: str, values: list[float], max_score: float) -> Spread | None:
    if not values:
        return None
    values = sorted(values)
    if len(values) > 1:
        q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = median = q3 = values[0]
    return Spread(name, max_score, len(values), statistics.fmean(values),
                  statistics.stdev(values) if len(values) > 1 else 0.0, values[0], q1, median, q3, values[-1])


def analyse(data) -> ItemAnalysis:
    """The item analysis of ``data`` (a ``coursekit.term.report.ClassData``)."""
    from coursekit.core.notebook import natural_key

    subs = data.submissions
    auto = {s.student: sum(c.score for c in s.cells if c.kind == "check") for s in subs}  # autograded points
    checks: dict[tuple[str, str], list] = defaultdict(list)       # (notebook, grade id) -> [(student, cell)]
    written: dict[tuple[str, str], list] = defaultdict(list)
    per_question: dict[str, dict[str, float]] = defaultdict(dict)  # question -> student -> points
    question_max: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    for sub in subs:
        for c in sub.cells:
            (checks if c.kind == "check" else written)[(c.notebook, c.grade_id)].append((sub.student, c))
            per_question[c.question][sub.student] = per_question[c.question].get(sub.student, 0.0) + c.score
            question_max[c.question][(c.notebook, c.grade_id)] = c.max_score

    order = {q: i for i, q in enumerate(data.question_order)}
    cell_order = lambda key_cells: (order.get(key_cells[1][0][1].question, len(order)), key_cells[0][0],  # noqa: E731
                                    natural_key(key_cells[0][1]))

    items = []
    for (notebook, gid), rows in sorted(checks.items(), key=cell_order):
        scores = [c.score for _, c in rows]
        rest = [auto[student] - c.score for student, c in rows]
        top = max(c.max_score for _, c in rows)
        r = pearson(scores, rest)
        items.append(CheckItem(notebook, gid, rows[0][1].question, top, len(rows), statistics.fmean(scores),
                               sum(c.score >= c.max_score for _, c in rows) / len(rows), r, flag_of(r)))

    questions = [s for q in sorted(per_question, key=lambda q: (order.get(q, len(order)), natural_key(q)))
                 if (s := spread(q, list(per_question[q].values()), sum(question_max[q].values())))]

    marks = []
    for (notebook, gid), rows in sorted(written.items(), key=cell_order):
        given = [c.score for _, c in rows if not c.pending]
        top = max(c.max_score for _, c in rows)
        marks.append(WrittenItem(notebook, gid, rows[0][1].question, top, len(given), len(rows) - len(given),
                                 spread(gid, given, top)))
    return ItemAnalysis(items, questions, marks)


# --- CSV ---------------------------------------------------------------------------------------

CSV_HEAD = ["notebook", "grade_id", "question", "max_score", "submissions", "mean_points", "difficulty",
            "pass_rate", "discrimination", "flag"]


def csv_rows(analysis: ItemAnalysis) -> list[list]:
    """One row per check cell (items.csv); discrimination "" when undefined."""
    return [[i.notebook, i.grade_id, i.question, i.max_score, i.n, round(i.mean, 4), round(i.difficulty, 4),
             round(i.pass_rate, 4), "" if i.discrimination is None else round(i.discrimination, 4), i.flag]
            for i in analysis.checks]


SPREAD_HEAD = ["question", "max_score", "submissions", "mean", "sd", "min", "q1", "median", "q3", "max"]
WRITTEN_HEAD = ["notebook", "grade_id", "question", "max_score", "marked", "waiting", "mean", "sd", "min", "median",
                "max"]


def _spread_values(s: Spread | None) -> list:
    return [round(v, 4) for v in (s.mean, s.sd, s.min, s.q1, s.median, s.q3, s.max)] if s else [""] * 7


def question_rows(analysis: ItemAnalysis) -> list[list]:
    """One row per question (items_questions.csv)."""
    return [[s.name, s.max_score, s.n, *_spread_values(s)] for s in analysis.questions]


def written_rows(analysis: ItemAnalysis) -> list[list]:
    """One row per written answer (items_written.csv): the spread of the marks given so far."""
    rows = []
    for w in analysis.written:
        mean, sd, low, _, median, _, high = _spread_values(w.spread)
        rows.append([w.notebook, w.grade_id, w.question, w.max_score, w.marked, w.waiting, mean, sd, low, median, high])
    return rows
