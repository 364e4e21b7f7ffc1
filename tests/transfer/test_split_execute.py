"""Check cells run outside the student's kernel (coursekit/transfer/split_execute.py).

Small notebooks through the course's own SplitExecute (the real kernels and sandboxes, no
gradebook, as `nbgrader validate` runs them) show the mechanism: values and calls cross as data,
hostile data and a student kernel that hangs or dies fail the check that needed them with a
clear message and nothing else, hidden test code never reaches the student's kernel, and the
student's sandbox cannot reach the checker. The reference submissions that try each door into
the student's kernel (tests/fixtures/build_submissions.py, "doors") are graded by the real
pipeline: tests/notebooks/test_adversarial_submissions.py says what each one earns; here, graded with the
checks back in the student's kernel (``SplitExecute.split = False``), each one is shown to do
damage, so that the defence is what stops it.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from traitlets.config.loader import PyFileConfigLoader

import builder
import leaks
from conftest import SUBMISSIONS, grade_class, read_expected_scores
from coursekit.core.course import REPO_ROOT
from coursekit.core.notebook import grade_id, is_check_cell
from coursekit.transfer.split_execute import SplitExecute, literal_constants, student_names

# --- which names a check reads ------------------------------------------------------------------


def test_a_check_reads_its_free_names_and_the_names_expect_names_lists():
    source = """checks.expect_names(globals(), 'model', 'history', 'unused_here')
### BEGIN HIDDEN TESTS
_ours = checks.forward(model, np.asarray(test_images)[:100])
for _row, _i in enumerate(my_images):
    print(len(_ours), _row, [x for x in range(3)], EPOCHS)
### END HIDDEN TESTS"""
    provided = {"np", "checks", "load_mnist", "_x_test"}
    assert student_names(source, provided) == ["EPOCHS", "history", "model", "my_images", "test_images", "unused_here"]


def test_names_the_checker_provides_or_any_check_assigns_are_never_read_from_the_student():
    assert student_names("checks.require(np.isfinite(_big).all(), 'x')\n_big = 1", {"np", "checks"}) == []
    assert student_names("_panels = checks.figure_panels(fig, 'fig')", {"np", "checks", "_panels"}) == ["fig"]


def test_a_read_only_cells_constants_are_its_literal_bindings_at_top_level():
    source = ("import numpy as np\nSEED = 2026\nEPOCHS = 5  # length\nA = B = (1, 'x')\nSHAPE = np.zeros(3).shape\n"
              "x, y = 1, 2\nif True:\n    HIDDEN = 1\nNEG = -0.5\n")
    assert literal_constants(source) == {"SEED": "2026", "EPOCHS": "5", "A": "(1, 'x')", "B": "(1, 'x')", "NEG": "-0.5"}
    assert literal_constants("this is not python(") == {}


# --- small notebooks through SplitExecute ---------------------------------------------------------


def meta(gid, grade=False, solution=False):
    m = {"grade": grade, "solution": solution, "grade_id": gid, "locked": not solution, "schema_version": 3,
         "task": False}
    if grade:
        m["points"] = 1
    return {"nbgrader": m}


SETUP = "import numpy as np\nfrom coursekit.student import checks"


def notebook(*cells, setup: str = SETUP) -> nbformat.NotebookNode:
    """(kind, source) pairs: kind 'answer' or 'check' (graded, read-only), after a read-only set-up cell."""
    built = [new_code_cell(setup, metadata=meta("setup"))]
    for n, (kind, source) in enumerate(cells):
        built.append(new_code_cell(source, metadata=meta(f"{kind}{n}", grade=kind == "check", solution=kind == "answer")))
    nb = new_notebook(cells=built)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def run(tmp_path, nb, timeout=60, gradebook: dict | None = None, **options) -> dict[str, list]:
    """Execute ``nb`` as the course does (its nbgrader_config.py); grade id -> outputs. With
    ``gradebook`` (resources' "nbgrader" entry), as autograde does: trusted sources from there."""
    config = PyFileConfigLoader("nbgrader_config.py", path=str(REPO_ROOT)).load_config()
    config.Execute.timeout = timeout  # (nbconvert reloads the configuration when it executes)
    config.SplitExecute.update(options)
    folder = tmp_path / "work"
    folder.mkdir(exist_ok=True)
    pp = SplitExecute(config=config)
    resources = {"metadata": {"path": str(folder)}}
    if gradebook is not None:
        resources["nbgrader"] = gradebook
    nb, _ = pp.preprocess(nb, resources)
    if options.get("split", True):
        assert not pp._transfer.root.exists(), "the transfer folder is removed with the notebook"
    return cell_outputs(nb)


def test_values_cross_when_the_grader_runs_with_a_restrictive_umask(tmp_path):
    """On the hub root grades with umask 007 (the course stays the staff's): the folders and
    files one kernel writes must still be readable by the other, which runs as another user."""
    old = os.umask(0o007)
    try:
        out = run(tmp_path, notebook(("answer", "x = np.arange(5.0)\n"),
                                     ("check", "checks.expect_names(globals(), 'x')\nassert x.sum() == 10\n")))
    finally:
        os.umask(old)
    assert error(out["check1"]) == "", error(out["check1"])


def cell_outputs(nb) -> dict[str, list]:
    return {grade_id(c): c.outputs for c in nb.cells}


def error(outputs) -> str:
    return next((f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"), "")


def printed(outputs) -> str:
    return "".join(o.get("text", "") for o in outputs if o.output_type == "stream")


def test_values_and_calls_cross_as_data(tmp_path):
    out = run(tmp_path, notebook(
        ("answer", "x = np.arange(5.0)\nshape = x.shape\n"
                   "def double_in_place(a):\n    print('called with', a.shape)\n    a *= 2\n    return a.sum()\n"
                   "def unanswered(a):\n    raise NotImplementedError()\n"),
        ("check", "checks.expect_names(globals(), 'x', 'shape')\nassert isinstance(shape, tuple) and x.sum() == 10\n"
                  "_a = np.ones(3)\n_total = double_in_place(_a)\nprint(_a, _total)"),
        ("check", "unanswered(1)"),
        ("check", "checks.expect_names(globals(), 'not_defined')"),
        ("answer", "import tensorflow as tf\nimport matplotlib.pyplot as plt\n"
                   "model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(3, activation='softmax')])\n"
                   "fig = plt.figure()\nplt.bar(range(3), [0.2, 0.3, 0.5])\nplt.xlabel('bars')"),
        ("check", "assert checks.describe_layers(model) == [('Dense', 3, 'softmax')], checks.describe_layers(model)\n"
                  "_panel, = checks.figure_panels(fig, 'fig')\n"
                  "assert _panel['xlabel'] == 'bars' and np.allclose(_panel['bars'], [0.2, 0.3, 0.5])\n"
                  "import sys\n"
                  "assert not {'tensorflow', 'keras', 'matplotlib'} & set(sys.modules), 'the checker loaded them'\n"
                  # running the model rebuilds it with Keras (coursekit/student/modelspec.py): TensorFlow then, not before
                  "checks.expect_probability_rows(checks.forward(model, np.ones((4, 2))), 'outputs')\n"
                  "assert 'keras' in sys.modules"),
    ))
    assert not error(out["check1"]) and printed(out["check1"]) == "called with (3,)\n[2. 2. 2.] 6.0\n"
    assert error(out["check2"]).startswith("NotImplementedError")
    assert error(out["check3"]).startswith("CheckFailed: not defined: not_defined")
    assert not error(out["check5"]), error(out["check5"])


HOSTILE_EXPORTER = '''import json, os
import numpy as np
import coursekit.transfer.export as _export

_genuine = _export.export_values


def _hostile(namespace, names, folder):
    if "ok" in names:
        return _genuine(namespace, names, folder)
    os.mkdir(folder)
    path = lambda name: os.path.join(folder, name)
    os.symlink("/etc/passwd", path("a0.npy"))
    os.mkfifo(path("a1.npy"))
    with open(path("a2.npy"), "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
    np.save(path("a3.npy"), np.array([print, 1], dtype=object), allow_pickle=True)
    values = {"sym": {"t": "array", "file": "a0.npy"}, "fifo": {"t": "array", "file": "a1.npy"},
              "huge": {"t": "array", "file": "a2.npy"}, "pickled": {"t": "array", "file": "a3.npy"},
              "fake_model": {"t": "model", "layers": [["Dense", 10, "relu"]], "weights": []}}
    text = json.dumps({"version": 1, "values": values, "missing": []})
    if "deep" in names:
        text = "[" * 100000 + "]" * 100000
    with open(path("manifest.json"), "w") as f:
        f.write(text)


_export.export_values = _hostile
ok = 1
'''


def test_hostile_data_fails_only_the_check_that_reads_it(tmp_path):
    names = ("sym", "fifo", "huge", "pickled", "fake_model", "deep")
    cells = [("answer", HOSTILE_EXPORTER)]
    cells += [("check", f"checks.expect_names(globals(), {name!r})") for name in names]
    cells += [("check", "checks.describe_layers(fake_model)"), ("check", "checks.expect_equal(ok, 1, 'ok')")]
    out = run(tmp_path, notebook(*cells))
    reasons = {name: error(out[f"check{n + 1}"]) for n, name in enumerate(names)}
    for name, reason in reasons.items():
        assert reason.startswith(f"CheckFailed: {name} could not be read from your notebook"), reason
    assert "not a plain file" in reasons["sym"] and "not a plain file" in reasons["fifo"]
    assert "the limit is" in reasons["huge"] and "cannot be read" in reasons["pickled"]
    assert "Dense layer" in reasons["fake_model"] or "weights" in reasons["fake_model"]
    assert "nested" in reasons["deep"] or "JSON" in reasons["deep"]
    assert error(out["check7"]).startswith("CheckFailed: fake_model could not be read")
    assert not error(out["check8"]), "a check after the hostile ones is graded normally"


def test_a_student_kernel_that_hangs_fails_the_check_that_waited_for_it(tmp_path):
    out = run(tmp_path, notebook(
        ("answer", "class Endless:\n    def __array__(self, *args, **kwargs):\n        while True:\n            pass\n"
                   "stuck = Endless()\n"
                   "def loops(x):\n    while True:\n        pass\nfine = 2"),
        ("check", "checks.expect_shape(stuck, (2,), 'stuck')"),
        ("check", "loops(1)"),
        ("check", "checks.expect_equal(fine, 2, 'fine')"),
    ), timeout=15)
    assert "could not be read from your notebook" in error(out["check1"])
    assert "time limit" in error(out["check1"])
    assert error(out["check2"]).startswith("CheckFailed: calling your function did not work") and \
        "time limit" in error(out["check2"])
    assert not error(out["check3"]), "the interrupted kernel answers the next check"


def test_a_student_kernel_that_dies_fails_the_check_with_the_reason(tmp_path):
    out = run(tmp_path, notebook(
        ("answer", "class Boom:\n    def __array__(self, *args, **kwargs):\n        import os\n        os._exit(1)\n"
                   "x = Boom()"),
        ("check", "checks.expect_shape(x, (2,), 'x')"),
    ))
    assert "x could not be read from your notebook" in error(out["check1"])
    assert "stopped" in error(out["check1"])


SPY = '''import linecache
_seen = "\\n".join([*In, *_ih, *map(str, Out.values()), *get_ipython().history_manager.input_hist_raw,
                   *("".join(e[2]) for e in list(linecache.cache.values()) if len(e) == 4)])
print("secret seen:", "HIDDEN-" + "CANARY-7f3a" in _seen)  # (this cell holds no copy of the canary)
'''


@pytest.mark.parametrize("split", [True, False])
def test_hidden_test_code_never_enters_the_students_kernel(tmp_path, split):
    out = run(tmp_path, notebook(
        ("answer", "x = 1"),
        ("check", "checks.expect_names(globals(), 'x')\n### BEGIN HIDDEN TESTS\n_canary = 'HIDDEN-CANARY-7f3a'\n"
                  "### END HIDDEN TESTS"),
        ("answer", SPY),
    ), split=split)
    assert not error(out["check1"])
    assert printed(out["answer2"]) == f"secret seen: {not split}\n"  # in the student's kernel, it would be


SANDBOX_VIEW = '''import glob, os, socket
print(sorted(os.path.basename(p) for p in glob.glob("/tmp/coursekit-split-*/*")))
for path in glob.glob("/tmp/coursekit-split-*/call/*"):
    print("reachable:", path)
try:
    open(glob.glob("/tmp/coursekit-split-*/checker")[0] + "/planted", "w")
    print("wrote into the checker's folder")
except OSError as err:
    print("checker folder:", err.strerror)
'''


EPOCHS_SETUP = SETUP + "\nEPOCHS = 5  # the tutorial's training length"
REBOUND_EPOCHS = ("answer", "EPOCHS = 1  # trains faster, and the check counts one epoch as the length")
EPOCHS_CHECK = ("check", "checks.expect_equal(EPOCHS, 5, 'number of epochs the check expects')")


def course_gradebook(tmp_path, nb, monkeypatch) -> dict:
    """A gradebook holding ``nb`` as the instructor released it, as autograde's resources name it."""
    import sys

    from nbgrader.api import Gradebook

    # A new gradebook is stamped by the `alembic` command: the one installed beside this Python.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")

    url = f"sqlite:///{tmp_path / 'gradebook.db'}"
    with Gradebook(url) as gb:
        gb.add_assignment("a")
        gb.add_notebook("n", "a")
        for cell in nb.cells:
            m = cell.metadata.nbgrader
            gb.add_source_cell(m["grade_id"], "n", "a", cell_type="code", locked=m["locked"], source=cell.source,
                               checksum="-")
            if m["grade"]:
                gb.add_grade_cell(m["grade_id"], "n", "a", cell_type="code", max_score=m["points"])
    return {"db_url": url, "notebook": "n", "assignment": "a"}


def test_a_read_only_cells_constants_are_the_checkers_own_whatever_the_student_rebinds(tmp_path, monkeypatch):
    """EPOCHS in a check is the set-up cell's, as the gradebook holds it: in the student's kernel
    a student who rebinds it changes what the check compares with."""
    attempt = notebook(REBOUND_EPOCHS, EPOCHS_CHECK, setup=EPOCHS_SETUP)
    assert "number of epochs" in error(run(tmp_path, attempt, split=False)["check1"]), "the rebinding did no damage"
    assert error(run(tmp_path, attempt)["check1"]) == ""
    released = notebook(REBOUND_EPOCHS, EPOCHS_CHECK, setup=EPOCHS_SETUP)
    attempt.cells[0].source = SETUP + "\nEPOCHS = 1"  # nbgrader restores it; the checker reads the gradebook anyway
    assert error(run(tmp_path, attempt, gradebook=course_gradebook(tmp_path, released, monkeypatch))["check1"]) == ""


def test_the_students_sandbox_sees_its_transfer_folders_only(tmp_path):
    out = run(tmp_path, notebook(("answer", SANDBOX_VIEW), ("check", "pass")))
    assert printed(out["answer0"]) == "['checker', 'student']\nchecker folder: Read-only file system\n"


def test_a_cell_marked_as_a_check_that_is_not_the_assignments_never_reaches_the_checker():
    pp = SplitExecute()
    pp._trusted = {"f1_load_hidden": "checks.expect_names(globals(), 'x')"}
    genuine = new_code_cell("checks.expect_names(globals(), 'x')", metadata=meta("f1_load_hidden", grade=True))
    forged = new_code_cell("import os; os.system('id')", metadata=meta("f1_load_hidden", grade=True))
    new_id = new_code_cell("checks.expect_names(globals(), 'x')", metadata=meta("mine", grade=True))
    assert pp._runs_in_checker(genuine)
    assert not pp._runs_in_checker(forged) and not pp._runs_in_checker(new_id)
    pp._refuse(forged)
    assert forged.outputs[0].ename == "CheckCellRefused"


# --- the doors, with the checks back in the student's kernel: each one does damage ----------------


def test_the_leak_detector_reads_every_encoding():
    import base64
    import codecs
    import gzip
    import zlib

    line = sorted(leaks.hidden_lines())[0]
    text = f"x = 1\n{line}\n".encode()
    for encoded in (text.decode(), base64.b64encode(zlib.compress(text)).decode(),
                    base64.b64encode(gzip.compress(text)).decode(), zlib.compress(text).hex(),
                    codecs.encode(text.decode(), "rot13"), base64.b64encode(text).decode()):
        assert leaks.leaked([f"noise {encoded} noise"]) == {line}
    assert not leaks.leaked(["x = 1", base64.b64encode(b"harmless text, nothing hidden").decode()])


@pytest.fixture(scope="module")
def unsplit_class(tmp_path_factory):
    """The door submissions graded with every cell in the student's kernel (split off); their
    fashion_mnist notebooks only, which the tests below read (half the grading time)."""
    import shutil

    from build_submissions import DOORS

    folders = tmp_path_factory.mktemp("unsplit-submissions")
    for door in DOORS:
        (folders / door / builder.ASSIGNMENT).mkdir(parents=True)
        shutil.copy(SUBMISSIONS / door / builder.ASSIGNMENT / "fashion_mnist.ipynb", folders / door / builder.ASSIGNMENT)
    return grade_class(tmp_path_factory.mktemp("unsplit") / "course", [folders / d for d in DOORS],
                       {"SplitExecute.split": False, "Execute.timeout": 60})


def points(graded, student, notebook) -> float:
    return sum(v or 0 for (s, nb, _), v in graded.scores.items() if s == student and nb == notebook)


def expected_points(student, notebook) -> float:
    return sum(float(v) for (s, nb, gid), v in read_expected_scores().items()
               if s == student and nb == notebook and v not in ("manual",) and gid != "late_penalty")


@pytest.mark.slow
@pytest.mark.parametrize("door", ["input-transformer", "ast-transformer", "patched-run-cell", "patched-do-execute"])
def test_rewriting_execution_fakes_every_check_when_checks_share_the_kernel(unsplit_class, door):
    assert expected_points(door, "fashion_mnist") == 0
    assert points(unsplit_class, door, "fashion_mnist") == 31, log_tail(unsplit_class, door)


@pytest.mark.slow
@pytest.mark.parametrize("door", ["pre-run-cell-hook", "settrace"])
def test_lenient_checks_pass_typed_in_results_when_checks_share_the_kernel(unsplit_class, door):
    for notebook, gid in (("fashion_mnist", "f7_train_hidden"),):
        assert float(read_expected_scores()[(door, notebook, gid)]) == 0
        assert unsplit_class.scores[(door, notebook, gid)] > 0, log_tail(unsplit_class, door)
    assert points(unsplit_class, door, "fashion_mnist") > expected_points(door, "fashion_mnist")


@pytest.mark.slow
@pytest.mark.parametrize("door", ["history-leak", "kernel-snoop"])
def test_printed_history_leaks_hidden_tests_when_checks_share_the_kernel(unsplit_class, door):
    nb = unsplit_class.autograded_notebook(door, "fashion_mnist")
    found = leaks.leaked(leaks.notebook_texts(nb) + [unsplit_class.feedback_html(door, "fashion_mnist")])
    assert len(found) > 20, found


def log_tail(graded, student) -> str:
    return graded.autograde_log[-3000:]



def test_the_checks_still_run_beside_the_answers_in_a_students_own_jupyter(tmp_path):
    """A student's own Jupyter has no checker: the check cells (hidden parts included, here from
    the source notebook) run in the student's kernel on the live model and figures."""
    from nbclient import NotebookClient

    nb = builder.source(names=["fashion_mnist"])["fashion_mnist"]
    builder.replace_in(nb, "f7_train", "model.fit(train_images, train_labels,",  # a token fit: quick
                       "model.fit(train_images[:600], train_labels[:600],")
    NotebookClient(nb, kernel_name="python3", timeout=300, allow_errors=True, resources={"metadata": {"path": str(tmp_path)}}).execute()
    failed = {grade_id(c): error(c.outputs) for c in nb.cells if is_check_cell(c) and error(c.outputs)}
    assert list(failed) == ["f7_train_hidden"] and "measured by the check" in failed["f7_train_hidden"], failed


def test_nbgrader_validate_runs_the_checks_in_the_checker(tmp_path):
    """nbgrader's Validator hard-codes its preprocessors; nbgrader_config.py makes it use
    SplitExecute. An input transformer in an answer then cannot turn a failing check into `pass`."""
    import subprocess
    import sys

    from coursekit.core.course import grading_env

    nb = notebook(("answer", "get_ipython().input_transformers_post.append(\n"
                             "    lambda lines: ['pass\\n'] if any('checks.' in l for l in lines) else lines)"),
                  ("check", "checks.require(False, 'this check always fails')"))
    nbformat.write(nb, tmp_path / "attempt.ipynb")
    out = {}
    for split in (True, False):
        proc = subprocess.run([str(Path(sys.executable).with_name("nbgrader")), "validate", str(tmp_path / "attempt.ipynb"),
                               f"--SplitExecute.split={split}"], cwd=REPO_ROOT, capture_output=True, text=True,
                              env=grading_env(), timeout=600)
        out[split] = proc.stdout + proc.stderr
    assert "VALIDATION FAILED ON 1 CELL" in out[True] and "this check always fails" in out[True], out[True][-3000:]
    assert "Success! Your notebook passes all the tests." in out[False], out[False][-3000:]


REDEFINED_ARGMAX = ("answer", "probabilities = np.eye(3)[[2, 0, 1]]\npredicted = np.zeros(3, dtype=int)  # wrong\n"
                              "np.argmax = lambda a, axis=None, **kwargs: np.zeros(len(a), dtype=int)\n"
                              "np.array_equal = lambda *args, **kwargs: True")
ARGMAX_CHECK = ("check", "checks.expect_names(globals(), 'probabilities', 'predicted')\n"
                         "checks.require(np.array_equal(predicted, np.argmax(probabilities, axis=1)), "
                         "'predicted should be the argmax of each row')")


def test_a_redefined_numpy_function_fools_a_check_in_a_stock_kernel_and_not_in_the_checker(tmp_path):
    """Stock nbgrader runs the check beside the answer, in a plain kernel: the answer's np.argmax
    and np.array_equal are the check's. In the checker they are NumPy's own, and the wrong answer fails."""
    from nbclient import NotebookClient

    nb = notebook(REDEFINED_ARGMAX, ARGMAX_CHECK)
    NotebookClient(nb, kernel_name="python3", timeout=120, allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert not error(cell_outputs(nb)["check1"]), "the stock kernel was not fooled: this test shows nothing"
    out = run(tmp_path, notebook(REDEFINED_ARGMAX, ARGMAX_CHECK))
    assert "predicted should be the argmax of each row" in error(out["check1"]), out["check1"]


# --- stopping a notebook's kernels ------------------------------------------------------------------


@pytest.mark.parametrize("stop", ["stop_kernel", "shutdown_kernel(now=True)"])
def test_a_stopped_kernels_sandbox_removes_its_scratch_at_once(tmp_path, stop):
    """split_execute.stop_kernel ends a kernel with SIGTERM, so that its sandbox wrapper removes its
    scratch folder (a tmpfs mount) itself; the SIGKILL of shutdown_kernel(now=True), which stopped
    the checker before, leaves it mounted until the next wrapper's sweep."""
    import asyncio
    import logging
    import shutil

    from jupyter_client.manager import AsyncKernelManager

    from coursekit.execution import sandbox
    from coursekit.execution.kernel import CHECKER_KERNEL
    from coursekit.transfer.split_execute import stop_kernel

    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")

    async def run() -> tuple[list[Path], list[Path]]:
        km = AsyncKernelManager(kernel_name=CHECKER_KERNEL)
        await km.start_kernel(cwd=str(tmp_path))
        kc = km.client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=120)
        kc.stop_channels()
        wrapper = km.provisioner.process.pid
        running = sandbox.scratch_folders(wrapper)
        if stop == "stop_kernel":
            await stop_kernel(km, logging.getLogger("test"))
        else:
            await km.shutdown_kernel(now=True)
        return running, sandbox.scratch_folders(wrapper)

    running, after = asyncio.run(run())
    assert len(running) == 1
    try:
        if stop == "stop_kernel":
            assert after == [] and not sandbox._is_mount(running[0])
        else:
            assert after == running and sandbox._is_mount(running[0])  # the damage the SIGTERM avoids
    finally:
        sandbox._sweep_scratch()
