"""release/week2/ is exactly what nbgrader generates from source/, and gives nothing away."""

import nbformat
import pytest

from builder import ASSIGNMENT, NOTEBOOKS, REPO
from conftest import REGIONS, region_lines
from coursekit.core.notebook import is_answer_cell

RELEASE = REPO.release(ASSIGNMENT)
SOURCE = REPO.source(ASSIGNMENT)


def public_text(nb) -> str:
    """What the source shows outside every secret region (instructions, read-only code)."""
    kept = []
    for cell in nb.cells:
        if cell.cell_type == "markdown" and is_answer_cell(cell):
            continue
        inside = False
        for line in cell.source.split("\n"):
            if any(begin in line for begin, _ in REGIONS.values()):
                inside = True
            elif any(end in line for _, end in REGIONS.values()):
                inside = False
            elif not inside:
                kept.append(line)
    return "\n".join(kept)


def secret_lines(notebook: str) -> dict[str, set[str]]:
    """Lines of the source notebook that students must never see, by kind (lines that the
    instructions themselves quote, such as `fig_two = plt.figure(...)`, are not secret)."""
    nb = nbformat.read(SOURCE / f"{notebook}.ipynb", as_version=4)
    shown = public_text(nb)
    secrets = {}
    for kind, (begin, end) in REGIONS.items():
        found = set()
        for cell in nb.cells:
            lines = [line.strip() for line in region_lines(cell.source, begin, end)]
            if kind == "solution" and cell.cell_type == "markdown" and is_answer_cell(cell):
                lines = [l.strip() for l in cell.source.split("\n")]  # a written model answer
            found.update(l for l in lines if len(l) > 12 and not l.startswith("#") and l not in shown)
        secrets[kind] = found
    return secrets


def test_release_matches_a_fresh_generate_assignment(course):
    for name in NOTEBOOKS:
        fresh = (course.layout.release(ASSIGNMENT) / f"{name}.ipynb").read_bytes()
        committed = (RELEASE / f"{name}.ipynb").read_bytes()
        assert fresh == committed, f"release/week2/{name}.ipynb is stale: run `nbgrader generate_assignment week2 --force`"
    assert sorted(p.name for p in course.layout.release(ASSIGNMENT).iterdir()) == sorted(p.name for p in RELEASE.iterdir())


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_release_holds_no_solution_hidden_test_or_mark_scheme(notebook):
    released = (RELEASE / f"{notebook}.ipynb").read_text()
    text = "\n".join(c.source for c in nbformat.reads(released, as_version=4).cells)
    for kind, (begin, end) in REGIONS.items():
        assert begin not in released and end not in released
    for kind, lines in secret_lines(notebook).items():
        assert lines, f"expected the source to have {kind} lines"
        leaked = sorted(l for l in lines if l in text)
        assert not leaked, f"{kind} lines in release/week2/{notebook}.ipynb:\n" + "\n".join(leaked)


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_committed_notebooks_have_no_outputs(notebook):
    for folder in (SOURCE, RELEASE):
        nb = nbformat.read(folder / f"{notebook}.ipynb", as_version=4)
        assert not any(c.get("outputs") for c in nb.cells), f"{folder}/{notebook}.ipynb has outputs: clear them"
        assert not any(c.get("execution_count") for c in nb.cells if c.cell_type == "code")
