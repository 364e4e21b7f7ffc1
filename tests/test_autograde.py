"""Every reference submission, through the real `nbgrader autograde`, scores exactly as
tests/fixtures/expected_scores.csv says, cell by cell."""

import pytest

from conftest import read_expected_scores

pytestmark = pytest.mark.slow


def test_every_fixture_has_expected_scores(graded_class):
    expected = read_expected_scores()
    listed = {key[0] for key in expected}
    assert set(graded_class.students) == listed, "each submission needs rows in expected_scores.csv"


def test_scores_match_the_table(graded_class):
    mismatches = []
    for key, want in sorted(read_expected_scores().items()):
        if key[0] not in graded_class.students:
            continue
        got = graded_class.scores.get(key, "missing")
        if want == "manual":
            if key not in graded_class.manual:
                mismatches.append(f"{key}: expected to wait for a TA, got auto score {got}")
        elif got == "missing" or got is None or abs(float(got) - float(want)) > 1e-9:
            mismatches.append(f"{key}: expected {want}, got {got}")
    assert not mismatches, "\n".join(mismatches) + "\n\nautograde log tail:\n" + graded_class.autograde_log[-3000:]


def test_perfect_submission_gets_every_autograded_point(graded_class):
    from nbgrader.api import Gradebook

    with Gradebook(graded_class.course.db_url) as gb:
        sub = gb.find_submission("week2", "perfect")
        assert sub.code_score == sub.max_code_score > 0


def test_untouched_release_gets_zero_without_crashing(graded_class):
    from nbgrader.api import Gradebook

    with Gradebook(graded_class.course.db_url) as gb:
        sub = gb.find_submission("week2", "untouched-release")
        assert sub.max_code_score > 0 and sub.code_score == 0
    assert (graded_class.course.root / "autograded" / "untouched-release" / "week2" / "mnist.ipynb").is_file()
