"""nbgrader's kernels are the course environment's Python with the submission folder off
sys.path: the student's kernel preloads the grader's agent and the guard (not the checker's
side), the checker kernel loads the checker's side without TensorFlow."""

import sys

import nbformat
from nbclient import NotebookClient

from coursekit.kernel import CHECKER_KERNEL, GRADER_KERNEL


def run_cells(tmp_path, *sources, kernel=GRADER_KERNEL):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    NotebookClient(nb, kernel_name=kernel, timeout=120,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return ["".join(o.get("text", "") for o in c.outputs if o.output_type == "stream") for c in nb.cells]


def test_grading_kernel_is_this_environments_python_with_the_agent_preloaded(tmp_path):
    (tmp_path / "coursekit.py").write_text("raise SystemExit('student file imported')\n")
    out = run_cells(tmp_path,
                    "import sys; print(sys.prefix)",
                    "import sys; print(*[m in sys.modules for m in ('coursekit.export', 'coursekit.checks', 'coursekit.checker')])",
                    "import coursekit; print(coursekit.__file__)")
    assert out[0].strip() == sys.prefix
    assert out[1].split() == ["True", "True", "False"]
    assert str(tmp_path) not in out[2] and out[2].strip().endswith("coursekit/__init__.py")


def test_checker_kernel_loads_the_checker_side_without_tensorflow(tmp_path):
    (tmp_path / "numpy.py").write_text("raise SystemExit('student file imported')\n")
    out = run_cells(tmp_path, "import sys; print(sys.prefix, 'coursekit.checker' in sys.modules, "
                              "'tensorflow' in sys.modules, 'keras' in sys.modules)", kernel=CHECKER_KERNEL)
    assert out[0].split() == [sys.prefix, "True", "False", "False"]
