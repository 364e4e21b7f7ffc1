"""The grader's own stops are the grader's knowledge, never a reading of a student's outputs
(issue 25): a student who raises "CellTimeoutError" or prints the sandbox's words has an
ordinary error or output in their cell, and a real stop is recorded once, in one wording,
whether the TA graded with plain `nbgrader autograde` or the class runner.

- the vocabulary (coursekit/core/notebook.py): stops come from the grader's marks; the matcher
  before issue 25 (taken from git) read them from the outputs, and is shown to be fooled;
- SplitExecute (coursekit/transfer/split_execute.py) with the real kernels and sandboxes: it notes the
  time limit it enforced and the output budget the sandbox wrapper cut, and nothing a cell
  printed or raised;
- the record: the runner's fast_class (tests/conftest.py) and a plain `nbgrader autograde` of
  the same infinite-loop submission record the same single entry.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import nbformat
import pytest
from history import old_source
from nbformat.v4 import new_code_cell, new_notebook, new_output
from traitlets.config.loader import PyFileConfigLoader

from builder import ASSIGNMENT
from conftest import FAST_TIMEOUT, SUBMISSIONS
from coursekit.core import notebook, problems
from coursekit.execution import sandbox
from coursekit.core.course import REPO_ROOT
from coursekit.transfer.split_execute import SplitExecute

OLD_COMMIT = "a538299"  # coursekit/core/notebook.py before issue 25: stops read from the outputs

# What a student can put in a cell: the words of every stop the grader knows.
FORGED = [
    "raise TimeoutError('Cell execution timed out')",
    "print('The sandbox stopped the kernel')",
    "raise type('CellTimeoutError', (Exception,), {})('No reply from kernel before timeout')",
    f"display({{'text/plain': {sandbox.OUTPUT_NOTICE_MARK + ' of 32M: nothing it printed after this point was kept'!r}}}, raw=True)",
    "raise MemoryError()",
    "raise type('DeadKernelError', (Exception,), {})('Kernel died')",
    "raise BlockingIOError(11, 'Resource temporarily unavailable')",
]


def error(ename, evalue=""):
    return new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def forged_outputs_notebook():
    """The outputs the cells of FORGED leave in a graded notebook, one cell each, plus a mark a
    student wrote into a cell's metadata."""
    notice = sandbox.OUTPUT_NOTICE_MARK + " of 32M: nothing it printed after this point was kept"
    return new_notebook(cells=[
        new_code_cell(outputs=[error("TimeoutError", "Cell execution timed out")]),
        new_code_cell(outputs=[new_output("stream", name="stdout", text="The sandbox stopped the kernel\n")]),
        new_code_cell(outputs=[error("CellTimeoutError", "No reply from kernel before timeout")]),
        new_code_cell(outputs=[new_output("display_data", data={"text/plain": notice})]),
        new_code_cell(outputs=[error("MemoryError")]),
        new_code_cell(outputs=[error("DeadKernelError", "Kernel died")]),
        new_code_cell(outputs=[error("BlockingIOError", "[Errno 11] Resource temporarily unavailable")]),
        new_code_cell(metadata={notebook.STOP_MARK: ["timeout"]}, outputs=[]),
    ])


def old_notebook_module():
    path = REPO_ROOT / ".pytest_cache" / "old_notebook_stops.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(old_source(OLD_COMMIT, "coursekit/notebook.py"))
    spec = importlib.util.spec_from_file_location("old_notebook_stops", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


def test_forged_stop_texts_fooled_the_old_matcher():
    old = old_notebook_module()
    reasons = [s.reason for s in old.stopped_cells(forged_outputs_notebook())]
    assert reasons == ["timeout", "output", "memory", "dead-kernel", "processes"]


def test_forged_stop_texts_are_no_stops_and_stay_the_students_own_errors():
    nb = forged_outputs_notebook()
    assert notebook.stopped_cells(nb)  # the mark a student wrote is read as long as it is there...
    assert notebook.mark_stops(nb, []) == []  # ...and the grader removes every mark it did not write
    assert notebook.stopped_cells(nb) == []
    assert [notebook.own_errors(c) for c in nb.cells] == [
        {"TimeoutError"}, set(), {"CellTimeoutError"}, set(), {"MemoryError"}, {"DeadKernelError"},
        {"BlockingIOError"}, set()]


def test_a_grader_stop_is_marked_once_and_its_echoes_are_not_the_cells_errors():
    nb = new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# notes"),
        new_code_cell(metadata={"nbgrader": {"grade_id": "f4_functions", "solution": True}},
                      outputs=[error("KeyboardInterrupt"), error("CellTimeoutError")]),
        new_code_cell(outputs=[error("ValueError", "bad")]),
    ])
    stops = notebook.mark_stops(nb, [[1, "timeout"], [1, "timeout"], [0, "timeout"], [2, "no-such"], [9, "memory"]])
    assert [(s.index, s.where, s.reason, s.kind) for s in stops] == [(1, "f4_functions", "timeout", "timeout")]
    assert notebook.stopped_cells(nb) == stops
    assert [notebook.own_errors(c) for c in nb.cells[1:]] == [set(), {"ValueError"}]
    assert all(kind in problems.KINDS for kind, _ in notebook.STOPS.values())


# --- SplitExecute with the real kernels ---------------------------------------------------------


def execute(tmp_path, cells: list[str], timeout: int, **sandbox_settings):
    """Run code cells through the course's SplitExecute; (notebook, resources)."""
    config = PyFileConfigLoader("nbgrader_config.py", path=str(REPO_ROOT)).load_config()
    config.Execute.timeout = timeout
    if sandbox_settings:
        config.Execute.extra_arguments = sandbox.Settings(**sandbox_settings).kernel_arguments()
    folder = tmp_path / "work"
    folder.mkdir(exist_ok=True)
    nb = new_notebook(cells=[new_code_cell(source) for source in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return SplitExecute(config=config).preprocess(nb, {"metadata": {"path": str(folder)}})


@pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is Linux's")
def test_split_execute_notes_the_stops_it_saw_and_nothing_a_cell_printed(tmp_path):
    loop = "while True:\n    pass"
    shout = "print('x' * (3 * 2**20))"
    nb, resources = execute(tmp_path, [*FORGED, loop, "print('after')", shout], timeout=8, output="2M")
    assert resources[notebook.STOPS_RESOURCE] == [[len(FORGED), "timeout"], [len(FORGED) + 2, "output"]]
    assert "CellTimeoutError" in {o.get("ename") for o in nb.cells[len(FORGED)].outputs}
    assert "after" in "".join(o.get("text", "") for o in nb.cells[len(FORGED) + 1].outputs)
    stops = notebook.mark_stops(nb, resources[notebook.STOPS_RESOURCE])
    assert [(s.index, s.reason) for s in stops] == [(len(FORGED), "timeout"), (len(FORGED) + 2, "output")]


# --- the record, under the runner and under plain nbgrader autograde ------------------------------


def timeout_entries(entries: list[dict]) -> list[dict]:
    return [e for e in entries if e["kind"] == "timeout"]


ONE_TIMEOUT = [{"kind": "timeout", "notebook": "fashion_mnist", "cell": "f4_functions",
                "message": notebook.STOPS["timeout"][1]}]


def test_the_runner_records_a_time_limit_stop_once_in_one_wording(fast_class):
    assert timeout_entries(fast_class.problems("infinite-loop")) == ONE_TIMEOUT
    nb = fast_class.autograded_notebook("infinite-loop", "fashion_mnist")
    assert [(s.where, s.reason) for s in notebook.stopped_cells(nb)] == [("f4_functions", "timeout")]


def test_plain_autograde_records_the_same_stop_and_no_forged_one(course):
    course.submit("infinite-loop", SUBMISSIONS / "infinite-loop" / ASSIGNMENT, ASSIGNMENT)
    forger = course.submit("forger", SUBMISSIONS / "untouched-release" / ASSIGNMENT, ASSIGNMENT)
    nb = nbformat.read(forger / "fashion_mnist.ipynb", as_version=4)
    answer = next(c for c in nb.cells if notebook.is_answer_cell(c) and c.cell_type == "code")
    answer.source = "\n".join(f"try:\n    {line}\nexcept BaseException as e:\n    print(type(e).__name__, e)"
                              for line in FORGED if line.startswith("raise")) + "\n" + "\n".join(
        line for line in FORGED if not line.startswith("raise"))
    answer.metadata[notebook.STOP_MARK] = ["timeout", "memory"]
    nbformat.write(nb, forger / "fashion_mnist.ipynb")
    course.nbgrader("autograde", ASSIGNMENT, f"--Execute.timeout={FAST_TIMEOUT}", timeout=1800)
    looped = problems.load(course.layout.autograded("infinite-loop", ASSIGNMENT))
    assert timeout_entries(looped) == ONE_TIMEOUT
    forged = problems.load(course.layout.autograded("forger", ASSIGNMENT))
    assert [e for e in forged if e["kind"] in ("timeout", "sandbox", "error")] == [], forged
    for name in ("fashion_mnist", "mnist"):
        graded = nbformat.read(course.layout.autograded("forger", ASSIGNMENT) / f"{name}.ipynb", as_version=4)
        assert notebook.stopped_cells(graded) == []
    graded = nbformat.read(course.layout.autograded("forger", ASSIGNMENT) / "fashion_mnist.ipynb", as_version=4)
    assert sandbox.OUTPUT_NOTICE_MARK in nbformat.writes(graded)  # the forged texts were there, as output
