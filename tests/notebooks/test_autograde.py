"""Every reference submission, through the real pipeline (`nbgrader autograde`,
`generate_feedback`, `export`, see tests/conftest.py), scores exactly as
tests/fixtures/expected_scores.csv says, cell by cell; the batch always completes; and nothing
of the course changes because of a submission.

Golden table: `pytest tests/notebooks/test_autograde.py --update-expected-scores` writes the observed
scores into expected_scores.csv instead of comparing (each row keeps its reason; a changed or
new row says NEEDS A REASON). Review `git diff` and write the reasons before committing.
"""

from __future__ import annotations

import csv

import pytest

from builder import ASSIGNMENT, NOTEBOOKS, release
from conftest import (EXPECTED_SCORES, LATE_PENALTY, SUBMISSIONS, build_submissions, dump,
                      read_expected_scores, submission_folders)
from coursekit.core.notebook import grade_id, is_graded


def grade_ids(notebook: str) -> list[str]:
    return [grade_id(c) for c in release(names=(notebook,))[notebook].cells if is_graded(c)]


def mismatches(graded, students) -> list[str]:
    expected = read_expected_scores()
    found = []
    for key, want in sorted(expected.items()):
        student, notebook, gid = key
        if student not in students:
            continue
        if gid == LATE_PENALTY:
            continue
        got = graded.scores.get(key, "missing")
        if want == "manual":
            if key not in graded.manual:
                found.append(f"{key}: expected to wait for a TA, got auto score {got}")
        elif key in graded.manual or got in ("missing", None) or abs(float(got) - float(want)) > 1e-9:
            found.append(f"{key}: expected {want}, got {got}" + (" (waiting for a TA)" if key in graded.manual else ""))
    for (student, notebook), penalty in sorted(graded.late_penalties.items()):
        if student in students:
            want = float(expected.get((student, notebook, LATE_PENALTY), 0))
            if abs(penalty - want) > 1e-9:
                found.append(f"{(student, notebook)}: expected late penalty {want}, got {penalty}")
    return found


def update_expected_scores(graded, students, path=EXPECTED_SCORES) -> None:
    """Write the observed scores of ``students`` into the golden table (--update-expected-scores)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    comments = [r for r in rows if r["submission"].startswith("#")]
    old = {(r["submission"], r["notebook"], r["grade_id"]): r for r in rows if r not in comments}
    names = list(dict.fromkeys([key[0] for key in old] + sorted(students)))
    out = []
    for name in names:
        for notebook in NOTEBOOKS:
            for gid in [*grade_ids(notebook), LATE_PENALTY]:
                key = (name, notebook, gid)
                if name not in students:
                    score = old[key]["score"] if key in old else None
                elif gid == LATE_PENALTY:
                    penalty = graded.late_penalties.get((name, notebook), 0.0)
                    score = f"{penalty:g}" if penalty else None
                else:
                    score = "manual" if key in graded.manual else f"{graded.scores.get(key) or 0:g}"
                if score is not None:
                    same = key in old and old[key]["score"] == score
                    out.append({"submission": name, "notebook": notebook, "grade_id": gid, "score": score,
                                "why": old[key]["why"] if same else "NEEDS A REASON"})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, ["submission", "notebook", "grade_id", "score", "why"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(comments + out)


def check_table(request, graded, students) -> None:
    if request.config.getoption("--update-expected-scores"):
        update_expected_scores(graded, students)
        pytest.skip("expected_scores.csv updated from the observed scores: review `git diff` and give reasons")
    found = mismatches(graded, students)
    assert not found, ("\n".join(found) + "\n\n" + "\n".join(dump(graded, s) for s in sorted({m.split("'")[1] for m in found}))
                       + "\n\nautograde log tail:\n" + graded.autograde_log[-3000:])


# --- the table --------------------------------------------------------------------------------


def test_every_fixture_has_expected_scores_for_every_graded_cell():
    expected = read_expected_scores()
    folders = {p.name for p in SUBMISSIONS.iterdir() if p.is_dir()}
    listed = {key[0] for key in expected}
    assert folders == listed, "each submission needs rows in expected_scores.csv (and each row a submission)"
    missing = [(s, nb, gid) for s in folders for nb in NOTEBOOKS for gid in grade_ids(nb)
               if (s, nb, gid) not in expected]
    assert not missing, f"rows missing from expected_scores.csv: {missing[:10]}"
    unknown = [k for k in expected if k[2] != LATE_PENALTY and k[2] not in grade_ids(k[1])]
    assert not unknown, f"rows for cells the assignment does not have: {unknown[:10]}"


def test_updating_the_table_with_the_scores_it_expects_changes_nothing(tmp_path):
    """--update-expected-scores keeps rows (and reasons) that still hold, and marks the others."""
    import shutil
    from types import SimpleNamespace

    table = shutil.copy(EXPECTED_SCORES, tmp_path / "expected.csv")
    expected = read_expected_scores()
    students = sorted({key[0] for key in expected})
    graded = SimpleNamespace(
        scores={k: float(v) for k, v in expected.items() if v != "manual" and k[2] != LATE_PENALTY},
        manual={k for k, v in expected.items() if v == "manual"},
        late_penalties={(k[0], k[1]): float(v) for k, v in expected.items() if k[2] == LATE_PENALTY})
    update_expected_scores(graded, students, table)
    assert table.read_text() == EXPECTED_SCORES.read_text()
    graded.scores[("perfect", "mnist", "m2_digits_hidden")] = 0.0
    update_expected_scores(graded, ["perfect"], table)
    assert "perfect,mnist,m2_digits_hidden,0,NEEDS A REASON" in table.read_text().splitlines()


def test_fast_submissions_score_as_the_table_says(request, fast_class):
    check_table(request, fast_class, [p.name for p in submission_folders(slow=False)])


@pytest.mark.slow
def test_submissions_that_train_score_as_the_table_says(request, graded_class):
    check_table(request, graded_class, [p.name for p in submission_folders(slow=True)])


@pytest.mark.slow
def test_perfect_submission_gets_every_autograded_point(graded_class):
    with graded_class.course.layout.gradebook() as gb:
        sub = gb.find_submission(ASSIGNMENT, "perfect")
        assert sub.code_score == sub.max_code_score > 0


def test_untouched_release_gets_zero_without_crashing(fast_class):
    with fast_class.course.layout.gradebook() as gb:
        sub = gb.find_submission(ASSIGNMENT, "untouched-release")
        assert sub.max_code_score > 0 and sub.code_score == 0
    assert (fast_class.autograded_dir("untouched-release") / "mnist.ipynb").is_file()


# --- the batch -----------------------------------------------------------------------------


def check_round(graded, students) -> None:
    assert graded.autograde_returncode == 0, graded.autograde_log[-4000:]
    for student in students:
        for notebook in NOTEBOOKS:
            assert (graded.autograded_dir(student) / f"{notebook}.ipynb").is_file(), f"{student}/{notebook} not graded"
            page = graded.feedback_page(student, notebook)
            assert page.is_file(), f"no feedback for {student}/{notebook}:\n{graded.feedback_log[-3000:]}"
    with open(graded.course.root / "grades.csv", newline="") as f:
        exported = {row["student_id"] for row in csv.DictReader(f) if row["assignment"] == ASSIGNMENT}
    assert exported >= set(students), f"not exported: {set(students) - exported}\n{graded.export_log[-2000:]}"


def test_every_fast_submission_is_graded_given_feedback_and_exported(fast_class):
    check_round(fast_class, [p.name for p in submission_folders(slow=False)])


@pytest.mark.slow
def test_every_submission_is_graded_given_feedback_and_exported(graded_class):
    check_round(graded_class, [p.name for p in submission_folders()])


def same_files(a, b) -> list[str]:
    return build_submissions.same_tree(a, b)


def test_nothing_of_the_course_changes_because_of_a_submission(fast_class):
    from conftest import assignment_rows, course_files

    before, after = fast_class.course_files, course_files(fast_class.course)
    assert before and after.keys() == before.keys(), "files added to or removed from source/ or release/"
    assert [p for p in before if after[p] != before[p]] == [], "course files changed while grading"
    assert assignment_rows(fast_class.course) == fast_class.assignment_rows, "the gradebook's week2 changed"
    for folder in submission_folders(slow=False):
        changed = same_files(fast_class.course.layout.submitted(folder.name, ASSIGNMENT).parent, folder)
        assert not changed, f"submitted/{folder.name} changed while grading: {changed}"


@pytest.mark.slow
def test_grading_more_submissions_changes_no_earlier_row(fast_class, graded_class):
    before = {k: v for k, v in fast_class.scores.items()}
    after = {k: v for k, v in graded_class.scores.items() if k[0] in fast_class.students}
    assert after == before
    assert {k: v for k, v in graded_class.late_penalties.items() if k[0] in fast_class.students} == fast_class.late_penalties
    for folder in submission_folders(slow=True):
        assert not same_files(graded_class.course.layout.submitted(folder.name, ASSIGNMENT).parent, folder)
