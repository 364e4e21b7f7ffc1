"""The students' wheel (coursekit/hosting/student_wheel.py) holds the data loaders and the check helpers,
nothing of the instructor's; installed on its own, its loaders fall back to Keras' download and
refuse a download that does not match the published checksums.

The Keras fallback runs for real and offline: a web server on 127.0.0.1 serves the files in
the layout Keras downloads them in, and the only change to Keras is the address it asks (its
``load_data`` hard-codes Google's storage host, so the test wraps Keras' ``get_file`` to ask
127.0.0.1 instead); Keras' own download, cache folder and file reading all run. For MNIST the
test serves an ``mnist.npz`` it made from the IDX files, whose file hash differs from the one
Keras pins for its official copy, so the wrapper also drops that pin: the check under test is
coursekit's own, on the arrays Keras returns.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import subprocess
import sys
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from coursekit.student import datapaths, datasets
from coursekit.hosting import hub, student_wheel
from builder import NOTEBOOKS
from coursekit.core.course import REPO_ROOT
from test_release import secret_lines

SHARED = hub.shared_data_dir()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return student_wheel.build(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel installed with pip into a folder of its own (put on PYTHONPATH to use it)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    return target


def wheel_text(wheel: Path) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as zf:
        return {name: zf.read(name).decode("utf-8", errors="replace") for name in zf.namelist()}


def test_wheel_holds_only_the_students_modules(wheel):
    files = wheel_text(wheel)
    package = sorted(n for n in files if n.startswith("coursekit/"))
    student = sorted(f"coursekit/student/{p.name}" for p in (REPO_ROOT / "coursekit" / "student").glob("*.py"))
    assert package == sorted(["coursekit/__init__.py", "coursekit/checks.py", "coursekit/datasets.py", *student])
    assert {"coursekit/student/checks.py", "coursekit/student/datasets.py", "coursekit/student/values.py"} <= set(student)
    grading = {".".join(p.relative_to(REPO_ROOT).with_suffix("").parts) for p in (REPO_ROOT / "coursekit").rglob("*.py")
               if p.parent.name != "student" and p.name != "__init__.py"} - {"coursekit.checks", "coursekit.datasets"}
    assert {"coursekit.execution.sandbox", "coursekit.grading.runner", "coursekit.rendering.feedback",
            "coursekit.transfer.checker", "coursekit.transfer.wire", "coursekit.core.layout"} <= grading
    for name in package:  # not shipped, and not imported either
        assert not {m for m in student_wheel.coursekit_imports(files[name]) if m.rpartition(".")[0] in grading
                    or m in grading}, name
    metadata = files[next(n for n in files if n.endswith(".dist-info/METADATA"))]
    assert "Name: coursekit-student" in metadata
    assert "Requires-Dist: numpy" in metadata and 'tensorflow>=2.16; extra == "tensorflow"' in metadata


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_wheel_holds_no_solution_hidden_test_or_mark_scheme(wheel, notebook):
    text = "\n".join(wheel_text(wheel).values())
    for kind, lines in secret_lines(notebook).items():
        assert lines, f"expected the source to have {kind} lines"
        leaked = sorted(line for line in lines if line in text)
        assert not leaked, f"{kind} lines of source/week2/{notebook}.ipynb in the students' wheel:\n" + "\n".join(leaked)


def test_wheel_is_reproducible(wheel, tmp_path):
    assert student_wheel.build(tmp_path).read_bytes() == wheel.read_bytes()


def test_a_student_module_importing_a_grading_module_is_refused(tmp_path, monkeypatch):
    package = tmp_path / "coursekit"
    (package / "student").mkdir(parents=True)
    for path in (REPO_ROOT / "coursekit" / "student").glob("*.py"):
        (package / "student" / path.name).write_text(path.read_text())
    for name in ("checks", "datasets"):
        (package / f"{name}.py").write_text((REPO_ROOT / "coursekit" / f"{name}.py").read_text())
    monkeypatch.setattr(student_wheel, "PACKAGE_DIR", package)
    monkeypatch.setattr(student_wheel, "STUDENT_DIR", package / "student")
    student_wheel.stage(tmp_path / "before")  # the real modules pass
    (package / "student" / "checks.py").write_text("from coursekit.rendering.feedback import CourseFeedback\n")
    with pytest.raises(student_wheel.StudentWheelError, match="coursekit.rendering.feedback"):
        student_wheel.stage(tmp_path / "out")


# --- the installed wheel, without local data: Keras' download, verified -------------------------


@pytest.fixture
def keras_mirror(tmp_path):
    """A web server on 127.0.0.1 with the files Keras downloads: Fashion-MNIST's four .gz files
    as published, and an mnist.npz made from the MNIST IDX files. Yields (url, folder, requests)."""
    root = tmp_path / "mirror"
    (root / "fashion-mnist").mkdir(parents=True)
    for f in (SHARED / "fashion-mnist").iterdir():
        (root / "fashion-mnist" / f.name).write_bytes(f.read_bytes())
    (x_train, y_train), (x_test, y_test) = datasets.load("mnist")
    np.savez_compressed(root / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root, requests
    finally:
        server.shutdown()
        server.server_close()


STUDENT_SCRIPT = r'''
import json, sys
import keras.src.datasets.fashion_mnist as fashion, keras.src.datasets.mnist as mnist

MIRROR = sys.argv[1]

def to_mirror(get_file, folder):
    def get_file_from_mirror(fname=None, origin=None, **kwargs):
        kwargs.pop("file_hash", None)  # our mnist.npz is not Keras' official file (module docstring)
        return get_file(fname, origin=MIRROR + folder + origin.rsplit("/", 1)[-1], **kwargs)
    return get_file_from_mirror

fashion.get_file = to_mirror(fashion.get_file, "fashion-mnist/")
mnist.get_file = to_mirror(mnist.get_file, "")

import coursekit
from coursekit.student import datasets
out = {"package": coursekit.__file__, "in_checkout": datasets.datapaths.IN_CHECKOUT, "data_dirs": [str(d) for d in datasets.data_dirs()]}
for name in sys.argv[2:]:
    try:
        (x_train, y_train), (x_test, y_test) = datasets.load(name)
        out[name] = {"shapes": [list(a.shape) for a in (x_train, y_train, x_test, y_test)],
                     "label_sums": [int(y_train.sum()), int(y_test.sum())]}
    except datasets.DatasetError as err:
        out[name] = {"error": str(err)}
    if name == "fashion-mnist":  # what the tutorial's own call returns from the same download
        (_, y_train), _ = fashion.load_data()
        out["keras_alone_label_sum"] = int(y_train.sum())
print("RESULT " + json.dumps(out))
'''


def run_as_student(installed: Path, tmp_path: Path, url: str, *names: str) -> dict:
    """The installed wheel in a fresh Python, with no data folder: as on a student's laptop."""
    env = {k: v for k, v in os.environ.items() if k not in (datapaths.DATA_DIR_ENV, datapaths.CACHE_DIR_ENV)}
    env.update(PYTHONPATH=str(installed), KERAS_HOME=str(tmp_path / "keras"), HOME=str(tmp_path / "home"),
               XDG_CACHE_HOME=str(tmp_path / "home" / ".cache"), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", STUDENT_SCRIPT, url, *names], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=600)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    assert proc.returncode == 0 and line, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(line[len("RESULT "):])


def test_installed_wheel_downloads_with_keras_and_verifies(installed, keras_mirror, tmp_path):
    url, _, requests = keras_mirror
    out = run_as_student(installed, tmp_path, url, "fashion-mnist", "mnist")
    assert out["package"].startswith(str(installed)) and out["in_checkout"] is False
    assert out["data_dirs"] == []
    for name in ("fashion-mnist", "mnist"):
        (_, y_train), (_, y_test) = datasets.load(name)
        assert out[name] == {"shapes": [[60000, 28, 28], [60000], [10000, 28, 28], [10000]],
                             "label_sums": [int(y_train.sum()), int(y_test.sum())]}, out[name]
    assert sorted(requests) == sorted(["/fashion-mnist/" + f.name for f in (SHARED / "fashion-mnist").iterdir()] + ["/mnist.npz"])
    assert (tmp_path / "keras" / "datasets" / "mnist.npz").is_file()  # Keras' own cache, as for a student


def test_installed_wheel_refuses_a_tampered_download(installed, keras_mirror, tmp_path):
    url, root, _ = keras_mirror
    labels = root / "fashion-mnist" / "train-labels-idx1-ubyte.gz"
    payload = bytearray(gzip.decompress(labels.read_bytes()))
    payload[8] = (payload[8] + 1) % 10  # the first label changed: still a valid file
    labels.write_bytes(gzip.compress(bytes(payload)))
    out = run_as_student(installed, tmp_path, url, "fashion-mnist")
    error = out["fashion-mnist"].get("error", "")
    assert "Keras' download of 'fashion-mnist' was refused" in error, out
    assert "train-labels-idx1-ubyte does not match the published data set" in error
    assert str(tmp_path / "keras" / "datasets") in error and "To fix it" in error
    # Without the check the altered labels go through: Keras itself verifies nothing here.
    (_, y_train), _ = datasets.load("fashion-mnist")
    assert out["keras_alone_label_sum"] != int(y_train.sum())
