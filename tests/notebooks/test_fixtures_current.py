"""The committed reference submissions are what their recipes build from today's release."""

from conftest import SUBMISSIONS, build_submissions


def test_committed_submissions_are_up_to_date(capsys):
    status = build_submissions.main(["--check"])
    assert status == 0, capsys.readouterr().out


def test_every_recipe_is_a_submission_folder_and_back():
    folders = {p.name for p in SUBMISSIONS.iterdir() if p.is_dir()}
    assert folders == set(build_submissions.RECIPES)
    assert build_submissions.TRAINS <= set(build_submissions.RECIPES)
