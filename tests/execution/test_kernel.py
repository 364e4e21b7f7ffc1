"""nbgrader's kernels are the course environment's Python with the submission folder off
sys.path: the student's kernel preloads the grader's agent and the guard (not the checker's
side), the checker kernel loads the checker's side without TensorFlow."""

import sys

import nbformat
import pytest
from nbclient import NotebookClient

from coursekit.execution.kernel import CHECKER_KERNEL, GRADER_KERNEL


def run_cells(tmp_path, *sources, kernel=GRADER_KERNEL):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    NotebookClient(nb, kernel_name=kernel, timeout=120,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return ["".join(o.get("text", "") for o in c.outputs if o.output_type == "stream") for c in nb.cells]


def test_grading_kernel_is_this_environments_python_with_the_agent_preloaded(tmp_path):
    (tmp_path / "coursekit.py").write_text("raise SystemExit('student file imported')\n")
    out = run_cells(tmp_path,
                    "import sys; print(sys.prefix)",
                    "import sys; print(*[m in sys.modules for m in ('coursekit.transfer.export', 'coursekit.student.checks', 'coursekit.transfer.checker')])",
                    "import coursekit; print(coursekit.__file__)")
    assert out[0].strip() == sys.prefix
    assert out[1].split() == ["True", "True", "False"]
    assert str(tmp_path) not in out[2] and out[2].strip().endswith("coursekit/__init__.py")


def test_checker_kernel_loads_the_checker_side_without_tensorflow(tmp_path):
    (tmp_path / "numpy.py").write_text("raise SystemExit('student file imported')\n")
    out = run_cells(tmp_path, "import sys; print(sys.prefix, 'coursekit.transfer.checker' in sys.modules, "
                              "'tensorflow' in sys.modules, 'keras' in sys.modules)", kernel=CHECKER_KERNEL)
    assert out[0].split() == [sys.prefix, "True", "False", "False"]


SEEDED_FIT = """
import hashlib, keras
from coursekit.student.datasets import load_fashion_mnist
(x, y), _ = load_fashion_mnist()
keras.utils.set_random_seed(42)
model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(),
                          keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x[:6000] / 255.0, y[:6000], epochs=1, verbose=0)
print(hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest())
"""


@pytest.mark.slow  # trains a model three times, in three kernels
def test_the_grading_kernel_trains_the_same_weights_whatever_threads_the_grader_asks_for(tmp_path, monkeypatch):
    """TensorFlow's thread count changes how a product is split, so the weights: the runner used to
    give each worker cores // workers threads, so a submission's model (and a grade near a
    threshold) depended on -j. The grading kernel trains with one thread whatever it is asked."""
    def digest(kernel, threads):
        monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", str(threads))
        return run_cells(tmp_path, SEEDED_FIT, kernel=kernel)[0].strip()

    one_thread = digest("python3", 1)
    assert digest("python3", 2) != one_thread  # a stock kernel trains with what it is told
    assert digest(GRADER_KERNEL, 2) == one_thread
