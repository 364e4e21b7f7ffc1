"""A TA's pages in a real browser: formgrader's Manual Grading, a feedback page and the class report,
opened for a hostile submission (tests/hostile_pages.py), with the defence off and on.

One course is graded once for the module: a hostile student (whose very id is a payload) hands in
a submission with payloads in a written answer, in an answer cell's outputs, in a grade id and a
file name that the grader quotes, and a 2.5 MB markdown bomb. Two Jupyter servers on 127.0.0.1,
each with a token, serve it:

- "stock": a copy of the course served as nbgrader ships (nbgrader's formgrader, Jupyter's
  default policy: the environment's config as nbgrader installs it, ``stock_jupyter_config``)
  with nbgrader's own feedback exporter: the payloads run. Its autograded notebook carries the
  image output's metadata as the kernel made it (stock nbgrader keeps it; the course's autograde
  checks it): the image covers the TA's window and its ``onload`` runs;
- "course": the course root served with the course's Jupyter config (``jupyter server
  --config=jupyter_server_config.py``; tests/rendering/test_formgrader_default.py starts it without), the
  course's feedback pages and the class report: no payload runs, the written answer's pasted
  screenshot is shown (hostile ones are named), and a TA grades the written answer.

A payload that runs asks the canary server for its name, writes ``pwned-<name>`` into the
server's root through the contents API, and opens a Jupyter terminal. One headless Chromium
(tests/browser.py) drives both. Screenshots: build/screenshots/ta_pages/.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from browser import Browser
from builder import ASSIGNMENT
from conftest import turn_intake_off
from coursekit.core.course import Course, grading_env
from hostile_pages import (Canary, Payloads, hostile_student_id, hostile_submission, image_metadata, pasted_images,
                           pwned_files, ran)

REPO = Path(__file__).resolve().parent.parent.parent
SHOTS = REPO / "build" / "screenshots" / "ta_pages"
TOKEN = "ta-token-for-tests"
NOTEBOOK = "fashion_mnist"
WRITTEN = "f2_why_split"  # the written answer that carries the payloads; a TA grades it
BOMB = 2_500_000  # characters of nested markdown in another written answer (f6_roles)
SETTLE = 3  # s to let a payload run (its requests go to 127.0.0.1) before looking for traces


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stock_jupyter_config(folder: Path) -> Path:
    """A Jupyter config folder that, put first on JUPYTER_CONFIG_PATH, gives back the extensions
    nbgrader installs (its formgrader on, the course's off), as if bin/setup had not installed
    the course's (``coursekit.rendering.formgrader.install_default_config``): Jupyter always reads the
    environment's own folder too, so the course's file cannot just be left out."""
    from coursekit.rendering.formgrader import STOCK_FORMGRADER

    conf_d = folder / "jupyter_server_config.d"
    conf_d.mkdir(parents=True, exist_ok=True)
    (conf_d / "zzzz-stock-nbgrader.json").write_text(json.dumps(
        {"ServerApp": {"jpserver_extensions": {STOCK_FORMGRADER: True, "coursekit.rendering.formgrader": False}}}))
    return folder


class JupyterServer:
    """``jupyter <command>`` (server, lab, notebook) in ``root`` on 127.0.0.1 with a token, as a TA
    starts it; ``args`` as a TA would add them, ``env`` added to the environment."""

    def __init__(self, root: Path, runtime: Path, args: tuple[str, ...] = (), command: str = "server",
                 env: dict | None = None):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = grading_env() | {"JUPYTER_RUNTIME_DIR": str(runtime)} | (env or {})
        self.log_path = root.parent / f"jupyter-{root.name}-{command}-{self.port}.log"
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("jupyter")), command, *args, "--no-browser", "--allow-root",
             "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={TOKEN}"],
            cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/api/status?token={TOKEN}", timeout=2)
                # this server's, not another one on the same port (Jupyter logs its own address)
                if f"127.0.0.1:{self.port}/" in self.log_path.read_text(errors="replace"):
                    return
                time.sleep(0.5)
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"jupyter {command} did not start: {self.log_path.read_text()[-3000:]}")

    def api(self, path: str):
        with urllib.request.urlopen(f"{self.url}{path}?token={TOKEN}", timeout=10) as r:
            return json.load(r)

    def get(self, path: str) -> tuple[int, dict, str]:
        """(status, headers, text) of a GET with the token."""
        try:
            with urllib.request.urlopen(f"{self.url}{path}?token={TOKEN}", timeout=120) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read().decode(errors="replace")

    def terminals(self) -> list:
        return self.api("/api/terminals")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def canary():
    c = Canary()
    yield c
    c.close()


@pytest.fixture(scope="module")
def hostile_class(tmp_path_factory, canary):
    """The graded course (the course's pipeline), its stock twin, and the payloads."""
    return grade_hostile_class(tmp_path_factory.mktemp("ta_pages"), canary, BOMB)


def grade_hostile_class(base: Path, canary: Canary, bomb_chars: int):
    course = Course.copy_of(base / "course")
    # The intake refuses this student id (tests/submissions/test_intake.py); the pages must escape it all the
    # same, as they would a roster entered by hand: here it reaches the gradebook through stock
    # nbgrader's reading of submissions.
    turn_intake_off(course)
    course.generate(ASSIGNMENT)
    submission, payloads = hostile_submission(canary.url, bomb_chars=bomb_chars)
    student = hostile_student_id(payloads)
    submission.submit(course, student)
    course.nbgrader("autograde", ASSIGNMENT)
    stock = Course(base / "stock")
    shutil.copytree(course.root, stock.root, symlinks=True)
    (stock.root / "jupyter_server_config.py").unlink()
    as_stock_autograde_leaves_it(stock.layout.autograded(student, ASSIGNMENT) / f"{NOTEBOOK}.ipynb", payloads)
    course.nbgrader("generate_feedback", ASSIGNMENT)
    # nbgrader's own feedback page: its HTMLExporter with its "feedback" template.
    stock.nbgrader("generate_feedback", ASSIGNMENT, "--GenerateFeedback.exporter_class=nbconvert.exporters.HTMLExporter")
    subprocess.run([sys.executable, "-m", "coursekit.term.report", ASSIGNMENT], cwd=course.root, check=True,
                   capture_output=True, env=grading_env())
    return base, course, stock, student, payloads


def as_stock_autograde_leaves_it(path: Path, payloads) -> None:
    """The stock twin's autograded notebook with the image output's metadata as the student's
    kernel made it and the written answer's pasted images as submitted: stock nbgrader's
    autograde keeps both; the course's checks them (``coursekit.rendering.bounds``), asserted here."""
    import nbformat

    from builder import cell

    nb = nbformat.read(path, as_version=4)
    images = [o for o in cell(nb, "f1_show").outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1 and images[0].metadata == {}, images  # made, and checked at autograde
    images[0].metadata = image_metadata(Payloads(payloads.canary))
    answer = cell(nb, WRITTEN)
    assert set(answer.attachments) == {"image.png"}  # the hostile ones dropped at autograde
    answer.attachments = pasted_images()[1]
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def browser():
    with Browser.start(screenshots=SHOTS) as b:
        yield b


@pytest.fixture(scope="module")
def servers(hostile_class):
    base, course, stock, _, _ = hostile_class
    runtime = base / "runtime"
    on = JupyterServer(course.root, runtime, ("--config=jupyter_server_config.py",))
    try:
        off = JupyterServer(stock.root, runtime, env={"JUPYTER_CONFIG_PATH": str(stock_jupyter_config(base / "stock-config"))})
    except Exception:
        on.stop()
        raise
    yield {"course": on, "stock": off}
    on.stop()
    off.stop()


def log_in(browser: Browser, server: JupyterServer) -> None:
    browser.open(f"{server.url}/login")
    browser.type_into("#password_input", TOKEN)
    browser.click("#login_submit")
    browser.wait_for(lambda: "/login" not in browser.url, 30, "login")


def open_manual_grading(browser: Browser, server: JupyterServer, student: str) -> None:
    """Formgrader -> Manual Grading -> week2 -> fashion_mnist -> the (only) submission."""
    browser.open(f"{server.url}/formgrader")
    browser.find_text("a", "Manual Grading").click()
    browser.find_text("a", ASSIGNMENT).click()
    browser.find_text("a", NOTEBOOK).click()
    browser.find_text("a", "Submission #1").click()
    browser.find(f"input.score[id='{WRITTEN}']", timeout=120)


# The images whose box covers the whole window (formgrader's own navigation and form under it).
COVERING_IMAGES = """return [...document.images].filter(i => { const r = i.getBoundingClientRect();
    return r.left <= 0 && r.top <= 0 && r.right >= innerWidth && r.bottom >= innerHeight; }).length"""


def traces(canary: Canary, server: JupyterServer, payloads) -> dict:
    time.sleep(SETTLE)
    return {"ran": ran(payloads.names, canary.hits, pwned_files(server.root)),
            "terminals": server.terminals(), "canary": list(canary.hits)}


def test_stock_formgrader_runs_the_payloads(browser, servers, hostile_class, canary):
    """The defence off: nbgrader's own formgrader runs the student's script in the TA's session."""
    _, _, _, student, payloads = hostile_class
    stock = servers["stock"]
    canary.hits.clear()
    log_in(browser, stock)
    open_manual_grading(browser, stock, student)
    seen = traces(canary, stock, payloads)
    covering = browser.script(COVERING_IMAGES)
    browser.shot("01-stock-formgrader-submission")
    (SHOTS / "01-stock-formgrader-ran.txt").write_text("\n".join(sorted(seen["ran"])) + "\n")
    # In the written answer, its outputs and the student id. (The grade id and the file name are
    # quoted as text in the "Grading notes" by the course's autograde already, so even stock
    # formgrader shows them as text.)
    assert {"written-img", "written-script", "output-html", "output-markdown", "output-js", "student-id",
            "image-metadata"} <= seen["ran"], seen
    assert covering == 1  # the image whose width carried a style: over the whole window
    assert seen["terminals"], "a payload opened a Jupyter terminal"
    assert any(f.startswith("pwned-") for f in pwned_files(stock.root))


def test_a_ta_grades_a_hostile_submission_and_nothing_runs(browser, servers, hostile_class, canary):
    """The README's formgrader workflow, on the course's server: log in, Manual Grading, the
    submission, points and a comment for the written answer, saved into the gradebook."""
    _, course, _, student, payloads = hostile_class
    server = servers["course"]
    canary.hits.clear()
    log_in(browser, server)
    open_manual_grading(browser, server, student)
    page = browser.text()
    assert "<img src=x onerror=" in page  # the payloads are shown as text, not run
    assert "cut by the grader" in page  # the markdown bomb, cut with a note
    assert browser.script(COVERING_IMAGES) == 0
    pasted = browser.find_innermost("My screenshot:")
    assert browser.script("return [...arguments[0].querySelectorAll('img')].map(i => i.naturalWidth)", pasted) == [1]
    for name in ("diagram.svg", "bad.png", "page.html"):
        assert f"[pasted image '{name}' not shown" in pasted.text, name
    browser.scroll_to(pasted)
    browser.shot("02a-course-formgrader-pasted-image")
    answer = browser.find(f"input.score[id='{WRITTEN}']")
    browser.scroll_to(answer)
    answer.clear()
    answer.send_keys("1.5")
    comment = browser.find(f"textarea[id='{WRITTEN}-comment']")
    comment.clear()
    comment.send_keys("Good: the test set measures new images. <b>no</b> script here")
    other = browser.find("input.score[id='f6_roles']")
    browser.scroll_to(other)  # at the window's edge the comment box covers it
    other.click()  # leaving the fields saves them (formgrader)

    def saved():
        with course.layout.gradebook() as gb:
            sub = gb.find_submission_notebook(NOTEBOOK, ASSIGNMENT, student)
            grade = next(g for g in sub.grades if g.name == WRITTEN)
            comment = next(c for c in sub.comments if c.name == WRITTEN)
            return (grade.manual_score, comment.manual_comment) if grade.manual_score is not None \
                and comment.manual_comment else None

    score, text = browser.wait_for(saved, 30, "the points and comment in the gradebook")
    assert score == 1.5
    assert text == "Good: the test set measures new images. <b>no</b> script here"
    browser.scroll_to(browser.find(f"input.score[id='{WRITTEN}']"))
    browser.shot("02-course-formgrader-graded")
    seen = traces(canary, server, payloads)
    assert seen["ran"] == set() and seen["canary"] == [], seen
    assert seen["terminals"] == []


def feedback_page(course: Course, student: str) -> Path:
    return course.layout.feedback(student, ASSIGNMENT) / f"{NOTEBOOK}.html"


def test_the_feedback_page_runs_no_payload(browser, hostile_class, canary):
    """The student's feedback page, opened as a file: nbgrader's runs the payloads (they can only
    reach the canary from a file), the course's runs none."""
    _, course, stock, student, payloads = hostile_class
    canary.hits.clear()
    browser.open(feedback_page(stock, student).as_uri())
    time.sleep(SETTLE)
    browser.scroll_to(browser.find_innermost("My answer: we split"))
    browser.shot("03-stock-feedback")
    stock_ran = ran(payloads.names, canary.hits, [])
    assert {"written-img", "output-html", "image-metadata"} <= stock_ran, canary.hits
    assert browser.script(COVERING_IMAGES) == 1

    canary.hits.clear()
    browser.open(feedback_page(course, student).as_uri())
    browser.wait_for_text("Grading notes")
    time.sleep(SETTLE)
    assert "<img src=x onerror=" in browser.text()
    assert browser.find("#coursekit-summary").is_displayed()  # the grader's own HTML is kept
    assert browser.script(COVERING_IMAGES) == 0
    pasted = browser.find_innermost("My screenshot:")
    assert browser.script("return [...arguments[0].querySelectorAll('img')].map(i => i.naturalWidth)", pasted) == [1]
    browser.scroll_to(browser.find_innermost("My answer: we split"))
    browser.shot("04-course-feedback")
    assert canary.hits == []


def test_the_class_report_runs_no_payload(browser, hostile_class, canary):
    _, course, _, student, payloads = hostile_class
    canary.hits.clear()
    browser.open((course.root / "reports" / ASSIGNMENT / "report.html").as_uri())
    browser.wait_for_text("class report")
    time.sleep(SETTLE)
    assert "<img src=x onerror=" in browser.text()  # the student id, shown as text
    browser.scroll_to(browser.find_innermost("<img src=x onerror="))
    browser.shot("05-class-report")
    assert canary.hits == []
