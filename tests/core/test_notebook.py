"""coursekit.core.notebook, the notebook vocabulary: which cells are checks and answers, which
question a grade id belongs to, why a check failed, which cells were stopped from outside."""

from __future__ import annotations

import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

import builder
from coursekit.core import notebook, problems
from coursekit.student.checks import CheckFailed


def marked(cell, **flags):
    cell.metadata["nbgrader"] = {"grade_id": "x", "schema_version": 3, **flags}
    return cell


def error(ename, evalue="", traceback=()):
    return new_output("error", ename=ename, evalue=evalue, traceback=list(traceback))


@pytest.mark.parametrize("grade_id, question", [
    ("f8_predictions_public", "F8"), ("f8_argmax", "F8"), ("f10_single_hidden", "F10"), ("m3_train", "M3"),
    ("f8", "F8"), ("setup", "setup"), ("md_02", "md_02"), (None, "?"), ("", "?"),
])
def test_a_grade_id_starts_with_its_question(grade_id, question):
    assert notebook.question_of(grade_id) == question


def test_every_graded_cell_of_the_course_belongs_to_a_titled_question():
    """The convention holds in the real notebooks: each graded cell's question has a heading."""
    for name, nb in builder.source().items():
        titles = notebook.question_titles(nb)
        graded = {notebook.question_of(notebook.grade_id(c)) for c in nb.cells if notebook.is_graded(c)}
        assert graded and graded <= set(titles), (name, graded - set(titles))
        assert all(q[0] == name[0].upper() for q in graded)  # F for fashion_mnist, M for mnist


def test_question_titles_come_from_the_headings():
    nb = new_notebook(cells=[new_markdown_cell("## F1 · Load the data (2 points)\ntext"),
                             new_markdown_cell("### F2: Scale the pixels"), new_markdown_cell("## Notes")])
    assert notebook.question_titles(nb) == {"F1": "Load the data", "F2": "Scale the pixels"}


def test_cell_kinds_are_nbgraders():
    answer = marked(new_code_cell(), solution=True, grade=False, locked=False)
    graded_answer = marked(new_code_cell(), solution=True, grade=True, points=2, locked=False)
    check = marked(new_code_cell(), solution=False, grade=True, points=2, locked=True)
    written = marked(new_markdown_cell(), solution=True, grade=True, points=3, locked=False)
    prompt = marked(new_markdown_cell(), solution=False, grade=False, locked=True)
    plain = new_code_cell()
    kinds = {name: (notebook.is_answer_cell(c), notebook.is_check_cell(c), notebook.is_readonly(c), notebook.is_graded(c))
             for name, c in dict(answer=answer, graded_answer=graded_answer, check=check, written=written,
                                 prompt=prompt, plain=plain).items()}
    assert kinds == {
        "answer": (True, False, False, False), "graded_answer": (True, False, False, True),
        "check": (False, True, True, True), "written": (True, False, False, True),
        "prompt": (False, False, True, False), "plain": (False, False, False, False),
    }


@pytest.mark.parametrize("metadata", [{"nbgrader": "grade"}, {"nbgrader": ["x"]}, {"nbgrader": None}, "metadata"])
def test_hostile_metadata_is_no_course_cell(metadata):
    cell = {"cell_type": "code", "metadata": metadata, "source": "", "outputs": []}
    assert notebook.flags(cell) == {} and notebook.grade_id(cell) is None
    assert not (notebook.is_graded(cell) or notebook.is_answer_cell(cell) or notebook.is_check_cell(cell)
                or notebook.is_readonly(cell))


def test_a_check_failure_is_read_back_from_the_cell():
    try:
        raise CheckFailed("shape of x", (10000,), (10,), "take argmax over axis=1")
    except CheckFailed as err:
        evalue = str(err)
    cell = new_code_cell(outputs=[error("CheckFailed", evalue, ["\x1b[31mCell In[7], line 4\x1b[0m"])])
    failure = notebook.cell_failure(cell)
    assert (failure.ename, failure.what, failure.hint, failure.line) == \
        ("CheckFailed", "shape of x", "take argmax over axis=1", 4)
    assert failure.message == "shape of x: expected (10000,), found (10,)"
    assert failure.key == "shape of x"
    other = notebook.cell_failure(new_code_cell(outputs=[error("NameError", "name 'model' is not defined")]))
    assert other.key == "NameError: name 'model' is not defined" and other.line is None and other.hint == ""
    stderr = notebook.cell_failure(new_code_cell(outputs=[new_output("stream", name="stderr", text="oops\n")]))
    assert stderr.stderr and stderr.message == "oops"
    assert notebook.cell_failure(new_code_cell(outputs=[new_output("stream", name="stdout", text="hi")])) is None


def test_stopped_cells_are_the_graders_marks_once_with_their_kind():
    """Stops are read from the marks the grader writes (mark_stops), never from outputs: the
    outputs below would all have been stops before issue 25 (tests/execution/test_stops.py shows it)."""
    nb = new_notebook(cells=[
        new_markdown_cell("# title"),
        marked(new_code_cell(outputs=[error("CellTimeoutError", "timed out"), error("KeyboardInterrupt")]),
               grade_id="f4_functions", solution=True),
        new_code_cell(outputs=[error("MemoryError"), error("MemoryError")]),
        new_code_cell(outputs=[error("BlockingIOError", "[Errno 11] Resource temporarily unavailable")]),
        new_code_cell(outputs=[error("BlockingIOError", "[Errno 11] something else")]),
        new_code_cell(outputs=[error("DeadKernelError", "Kernel died")]),
        new_code_cell(outputs=[error("ValueError", "bad"), error("NotImplementedError")]),
    ])
    assert notebook.stopped_cells(nb) == []
    notebook.mark_stops(nb, [[1, "timeout"], [2, "memory"], [5, "dead-kernel"], [1, "timeout"]])
    stops = [(s.index, s.where, s.reason, s.kind) for s in notebook.stopped_cells(nb)]
    assert stops == [(1, "f4_functions", "timeout", "timeout"), (2, "cell 3", "memory", "sandbox"),
                     (5, "cell 6", "dead-kernel", "error")]
    assert all(kind in problems.KINDS for *_, kind in stops)
    own = [notebook.own_errors(c) for c in nb.cells[1:]]
    assert own == [set(), {"MemoryError"}, {"BlockingIOError"}, {"BlockingIOError"}, set(),
                   {"ValueError", "NotImplementedError"}]
