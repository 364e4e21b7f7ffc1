"""The source notebooks pass their own checks, the release fails every one, and the check
cells are well behaved (no training, no stderr, no output value read as partial credit)."""

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from builder import ASSIGNMENT, NOTEBOOKS, REPO
from coursekit.core.course import grading_env
from coursekit.core.notebook import grade_id, is_graded


def nbgrader_validate(path: Path, *args: str) -> str:
    proc = subprocess.run([str(Path(sys.executable).with_name("nbgrader")), "validate", *args,
                           str(path.relative_to(REPO.root))],
                          cwd=REPO.root, capture_output=True, text=True, env=grading_env(), timeout=900)
    return proc.stdout + proc.stderr


def grade_cells(path: Path):
    nb = nbformat.read(path, as_version=4)
    return [c for c in nb.cells if is_graded(c) and c.cell_type == "code"]


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_source_notebooks_pass_nbgrader_validate(notebook):
    out = nbgrader_validate(REPO.source(ASSIGNMENT) / f"{notebook}.ipynb")
    assert "Success! Your notebook passes all the tests." in out, out[-5000:]


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_release_fails_every_check_under_validate_invert(notebook):
    out = nbgrader_validate(REPO.release(ASSIGNMENT) / f"{notebook}.ipynb", "--invert")
    assert "Success! The notebook does not pass any tests." in out, out[-5000:]
    assert "passed" not in out.replace("does not pass", "")


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_check_cells_never_train(notebook):
    for cell in grade_cells(REPO.source(ASSIGNMENT) / f"{notebook}.ipynb"):
        assert not re.search(r"\.fit\s*\(", cell.source), f"{grade_id(cell)} calls fit"


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_every_hidden_check_has_a_visible_line_that_fails_on_the_release(notebook):
    for cell in grade_cells(REPO.source(ASSIGNMENT) / f"{notebook}.ipynb"):
        if "### BEGIN HIDDEN TESTS" in cell.source:
            visible = cell.source.split("### BEGIN HIDDEN TESTS")[0]
            assert "checks.expect_names(globals()" in visible, grade_id(cell)


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_check_cells_of_a_graded_solution_write_no_stderr_and_return_no_value(graded_class, notebook):
    path = graded_class.autograded_dir("perfect") / f"{notebook}.ipynb"
    for cell in grade_cells(path):
        gid = grade_id(cell)
        for out in cell.outputs:
            assert not (out.output_type == "stream" and out.name == "stderr"), f"{gid} wrote to stderr: {out.text[:500]}"
            assert out.output_type not in ("execute_result", "error"), f"{gid}: {out.output_type}"


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_every_heading_states_the_points_of_its_cells(notebook):
    """'## F3 · ... (7 points)' is what the cells whose grade ids start with f3_ are worth together."""
    from coursekit.core.notebook import flags, question_of

    nb = nbformat.read(REPO.source(ASSIGNMENT) / f"{notebook}.ipynb", as_version=4)
    stated = {m.group(1): int(m.group(2)) for cell in nb.cells if cell.cell_type == "markdown"
              for m in re.finditer(r"^#{1,6}\s*([A-Z]\d+)\s*·.*\((?:[^()]*?)(\d+) points?\)\s*$", cell.source, re.M)}
    worth: dict[str, float] = {}
    for cell in nb.cells:
        if is_graded(cell):
            question = question_of(grade_id(cell))
            worth[question] = worth.get(question, 0) + float(flags(cell).get("points", 0))
    assert stated and set(stated) == set(worth)
    assert {q: float(p) for q, p in stated.items()} == worth
