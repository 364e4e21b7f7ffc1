"""Unit tests of the submission repairs' building blocks (coursekit/submissions/sanitize.py). The
end-to-end outcomes are in test_broken_submissions.py."""

from __future__ import annotations

import copy
import json

import nbformat
import pytest
from nbgrader.coursedir import CourseDirectory
from traitlets.config import Configurable

import builder
from builder import ASSIGNMENT
from coursekit.core import problems
from coursekit.submissions import sanitize
from coursekit.core.notebook import grade_id, is_answer_cell, is_graded


def release(name="fashion_mnist"):
    return builder.release(names=(name,))[name]


def write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("content, says", [
    (b"\xff\xfe\x00binary", "not a text file"),
    (b'{"cells": [', "not valid JSON"),
    (b"[1, 2, 3]", "not a Jupyter notebook"),
    (b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"source": "x"}]}', "cells are damaged"),
])
def test_unreadable_files_say_why(tmp_path, content, says):
    path = tmp_path / "nb.ipynb"
    path.write_bytes(content)
    with pytest.raises(sanitize.Unreadable, match=says):
        sanitize.read_submitted(path)


def test_nbformat_3_is_read_and_its_version_reported(tmp_path):
    path = write(tmp_path / "old.ipynb", nbformat.writes(nbformat.convert(release(), 3)))
    nb, version, repeated, _ = sanitize.read_submitted(path)
    assert version == 3 and nb.nbformat == 4 and not repeated
    assert sanitize.answer_ids(nb) == sanitize.answer_ids(release())


def test_repeated_cell_ids_are_reported(tmp_path):
    nb = release()
    nb.cells.append(nb.cells[4])
    path = write(tmp_path / "dup.ipynb", json.dumps(nb))  # json, not nbformat: it would renumber
    _, _, repeated, _ = sanitize.read_submitted(path)
    assert repeated == [nb.cells[4]["id"]]


def test_placeholder_runs_nothing_but_the_checks():
    nb = sanitize.placeholder(release())
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(is_graded(c) for c in code)
    written = [c for c in nb.cells if is_answer_cell(c) and c.cell_type == "markdown"]
    assert written and all(c.source == "YOUR ANSWER HERE" for c in written)


def test_a_renamed_copy_is_matched_by_its_cells_not_its_name(tmp_path):
    fashion = write(tmp_path / "Untitled.ipynb", nbformat.writes(release("fashion_mnist")))
    digits = write(tmp_path / "fashion_mnist (1).ipynb", nbformat.writes(release("mnist")))
    unknown = {"Untitled": str(fashion), "fashion_mnist (1)": str(digits)}
    assert sanitize._best_match(release("fashion_mnist"), unknown, set()) == "Untitled"
    assert sanitize._best_match(release("mnist"), unknown, set()) == "fashion_mnist (1)"
    assert sanitize._best_match(release("mnist"), {"Untitled": str(fashion)}, set()) is None


def test_notes_go_into_one_cell_at_the_top_once():
    nb = release()
    sanitize.put_notes(nb, ["first"])
    sanitize.put_notes(nb, ["first", "second"])
    notes = [c for c in nb.cells if c.source.startswith(sanitize.NOTES_MARK)]
    assert len(notes) == 1 and nb.cells[0] is notes[0]
    assert notes[0].source.count("- first") == 1 and "- second" in notes[0].source
    sanitize.put_notes(nb, [])
    assert len(nb.cells) == len(release().cells) + 1


class FakeConverter(Configurable):
    """Stands in for nbgrader's converter: RepairCells reads the course directory from it."""

    def __init__(self, root, **kw):
        super().__init__(**kw)
        self.coursedir = CourseDirectory(root=str(root))


def repaired(tmp_path, nb):
    converter = FakeConverter(tmp_path)
    repair = sanitize.RepairCells(parent=converter)
    resources = {"nbgrader": {"student": "s", "assignment": ASSIGNMENT, "notebook": "fashion_mnist"}}
    repair.match_release(nb, release(), resources)
    found = {(p["kind"], p["cell"]) for p in problems.load(sanitize.course_of(converter).autograded("s", ASSIGNMENT))}
    return nb, found


def ids(nb):
    return [grade_id(c) for c in nb.cells if grade_id(c)]


def test_a_sound_notebook_is_left_as_it_is(tmp_path):
    nb, found = repaired(tmp_path, release())
    assert nb == release() and found == set()


def test_changed_settings_of_a_check_are_put_back(tmp_path):
    nb = release()
    check = next(c for c in nb.cells if grade_id(c) == "f7_train_hidden")
    check.metadata.nbgrader.update(points=30, locked=False, solution=True)
    nb, found = repaired(tmp_path, nb)
    restored = next(c for c in nb.cells if grade_id(c) == "f7_train_hidden")
    assert restored.metadata.nbgrader == next(c for c in release().cells
                                              if grade_id(c) == "f7_train_hidden").metadata.nbgrader
    assert found == {("tampered-cell", "f7_train_hidden")}


def test_unknown_markers_are_dropped_and_copies_keep_only_the_last_marker(tmp_path):
    nb = release()
    stranger = nbformat.v4.new_code_cell("x = 1", metadata={"nbgrader": {
        "grade": True, "grade_id": "not_in_week2", "locked": True, "points": 5, "schema_version": 3, "solution": False}})
    copied = copy.deepcopy(next(c for c in nb.cells if grade_id(c) == "f1_load_public"))
    nb.cells[1:1] = [stranger, copied]  # a copy pasted above the original
    nb, found = repaired(tmp_path, nb)
    assert ids(nb) == ids(release()) and "nbgrader" not in stranger.metadata and "nbgrader" not in copied.metadata
    assert found == {("tampered-cell", "not_in_week2"), ("duplicate-cell", "f1_load_public")}


def test_deleted_course_cells_come_back_where_they_were(tmp_path):
    nb = release()
    gone = {"f1_load_hidden", "f1_show_hidden", "f2_why_split", "setup", "md_02"}  # adjacent ones too
    nb.cells = [c for c in nb.cells if grade_id(c) not in gone]
    nb, found = repaired(tmp_path, nb)
    assert ids(nb) == ids(release())
    assert found == {("deleted-test-cell", g) for g in ("f1_load_hidden", "f1_show_hidden", "f2_why_split", "setup")}


def test_nbgraders_add_missing_cells_is_no_substitute_for_putting_deleted_cells_back(course, tmp_path):
    """Why RepairCells restores deleted cells itself (its docstring): nbgrader 0.9.6's
    OverwriteCells.add_missing_cells fails on a check deleted after a read-only prompt, leaves a
    deleted read-only cell out, and changes the source of what it restores."""
    from nbgrader.preprocessors import OverwriteCells

    def stock(gone):
        nb = release()
        nb.cells = [c for c in nb.cells if grade_id(c) not in gone]
        resources = {"nbgrader": {"notebook": "fashion_mnist", "assignment": ASSIGNMENT, "db_url": course.db_url}}
        return OverwriteCells(add_missing_cells=True).preprocess(nb, resources)[0]

    with pytest.raises(KeyError, match="f2_prompt"):
        stock({"f2_why_split"})
    assert "setup" not in ids(stock({"setup"}))
    restored = builder.cell(stock({"f1_load_hidden"}), "f1_load_hidden")
    assert restored.source != builder.cell(release(), "f1_load_hidden").source

    ours = release()
    ours.cells = [c for c in ours.cells if grade_id(c) not in {"f2_why_split", "setup", "f1_load_hidden"}]
    ours, found = repaired(tmp_path, ours)
    assert ids(ours) == ids(release())
    assert [c.source for c in ours.cells] == [c.source for c in release().cells]
    assert found == {("deleted-test-cell", g) for g in ("f2_why_split", "setup", "f1_load_hidden")}


def test_the_exporter_finds_the_sanitize_hook_behind_other_hooks(tmp_path):
    """nbgrader gives its pre-convert hook only paths: the exporter nbgrader makes for the same
    converter attaches itself to the hook (through the sandbox's PreflightHook, which runs first)."""
    from coursekit.execution.sandbox import PreflightHook

    converter = FakeConverter(tmp_path)
    hook = sanitize.ExpectedNotebooks()
    converter.pre_convert_hook = PreflightHook(then=hook)
    exporter = sanitize.SubmissionExporter(parent=converter)
    assert hook.exporter is exporter and exporter.plans == {}
    assert sanitize.course_of(exporter).root == tmp_path
