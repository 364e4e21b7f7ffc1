"""nbgrader's kernel is the course environment's Python, with the checks preloaded and the
submission folder off sys.path."""

import sys

import nbformat
from nbclient import NotebookClient

from coursekit.kernel import GRADER_KERNEL


def run_cells(tmp_path, *sources):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    NotebookClient(nb, kernel_name=GRADER_KERNEL, timeout=120,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return ["".join(o.get("text", "") for o in c.outputs if o.output_type == "stream") for c in nb.cells]


def test_grading_kernel_is_this_environments_python_with_checks_preloaded(tmp_path):
    (tmp_path / "coursekit.py").write_text("raise SystemExit('student file imported')\n")
    out = run_cells(tmp_path,
                    "import sys; print(sys.prefix)",
                    "import sys; print('coursekit.checks' in sys.modules)",
                    "import coursekit; print(coursekit.__file__)")
    assert out[0].strip() == sys.prefix
    assert out[1].strip() == "True"
    assert str(tmp_path) not in out[2] and out[2].strip().endswith("coursekit/__init__.py")
