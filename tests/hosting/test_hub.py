"""The course loop on JupyterHub, in a real browser: what README "Running the course on
JupyterHub" tells the instructor, the TAs and the students to do, done through the pages they use.

`bin/hub`'s program runs the hub on 127.0.0.1 with its own Unix accounts (tests/hub_session.py):
the instructor releases week2 in Formgrader; w2-ann logs in, fetches it in the Assignments tab,
answers, validates and submits; w2-cem submits twice; the deadline passes (the instructor sets
it in Formgrader) and w2-bob submits late; the instructor collects in Formgrader; root grades
the class with the runner; the TA marks a written answer with a comment in Formgrader; the
instructor generates and releases feedback; w2-ann fetches it and reads her score, the TA's
comment and no hidden test. Every step leaves a screenshot in build/screenshots/hub/.

What the students hand in keeps grading cheap and still real: w2-ann answers everything but
trains on the first 2,000 images (her hidden accuracy checks fail; validation passes), w2-bob
and w2-cem hand in the `all-but-training` reference answers (no training; their expected
scores are in tests/fixtures/expected_scores.csv).
"""

from __future__ import annotations

import datetime
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys

import browser as browser_helper
import build_submissions as recipes
import builder
from conftest import GradedClass, read_expected_scores
from builder import ASSIGNMENT, NOTEBOOKS
from coursekit.core import notebook as notebook_vocab
from coursekit.core import problems as coursekit_problems
from coursekit.core.course import REPO_ROOT, grading_env
from hub_session import GROUP, INSTRUCTOR, STUDENTS, TA, RunningHub
from test_release import secret_lines

pytestmark = [pytest.mark.slow, pytest.mark.browser]

SHOTS = REPO_ROOT / "build" / "screenshots" / "hub"
ANN, BOB, CEM = STUDENTS
TA_POINTS = 1
TA_COMMENT = "Good start. Say also why a model can look good on its training images and still fail on new ones."


def answers(nbs) -> dict[str, dict[str, str]]:
    """notebook -> {grade_id: source} of the answer cells."""
    return {name: {notebook_vocab.grade_id(c): c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")}
            for name, nb in nbs.items()}


ANN_F2 = ("We keep the test images apart so that we can check the model on pictures it has never seen. "
          "That tells us if it really learned something.")


def ann_answers():
    """Everything answered as in the solution, but every model trained on 2,000 images only, and
    a written answer to F2 of her own (half the points by the mark scheme)."""
    nbs = builder.solved()
    builder.cell(nbs["fashion_mnist"], "f2_why_split").source = ANN_F2
    builder.replace_in(nbs["fashion_mnist"], "f7_train", "model.fit(train_images, train_labels,",
                       "model.fit(train_images[:2000], train_labels[:2000],")
    builder.replace_in(nbs["mnist"], "m3_train", "model.fit(images, labels,", "model.fit(images[:2000], labels[:2000],")
    return answers(nbs)


def cem_first_answers():
    """A first go: fashion_mnist as in all-but-training, mnist not started."""
    nbs = recipes.all_but_training()
    nbs["mnist"] = builder.release()["mnist"]
    return answers(nbs)


@dataclass
class Loop:
    hub: RunningHub
    step: int = 0
    validation: dict[str, str] = field(default_factory=dict)
    submitted: dict[str, list[str]] = field(default_factory=dict)  # student -> timestamps in their Assignments tab
    collect_log: str = ""
    due: datetime.datetime | None = None
    feedback_text: dict[str, str] = field(default_factory=dict)  # notebook -> text of ann's feedback page
    graded: GradedClass | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def shot(self, browser, name: str) -> None:
        self.step += 1
        browser.shot(f"{self.step:02d}-{name}")


# --- what people do ---------------------------------------------------------------------------


def open_assignments(b) -> None:
    b.find_text(".lm-MenuBar-itemLabel", "Nbgrader").click()
    b.find_text(".lm-Menu-itemLabel", "Assignment List").click()
    b.find("#released_assignments_list")


def write_answers(loop: Loop, b, user: str, cells: dict[str, dict[str, str]]) -> None:
    """Put answers into the answer cells of the student's own notebooks through the Jupyter
    contents API, from the student's logged-in page (as the notebook editor saves them)."""
    xsrf = {"X-XSRFToken": b.driver.get_cookie("_xsrf")["value"]}
    for name, sources in cells.items():
        url = loop.hub.user_url(user, f"api/contents/{ASSIGNMENT}/{name}.ipynb")
        got = b.fetch_json("GET", url + "?content=1", None, xsrf)
        assert got["status"] == 200, got
        model = json.loads(got["text"])
        filled = 0
        for cell in model["content"]["cells"]:
            gid = cell["metadata"].get("nbgrader", {}).get("grade_id")
            if gid in sources:
                cell["source"], filled = sources[gid], filled + 1
        assert filled == len(sources)
        put = b.fetch_json("PUT", url, {"type": "notebook", "format": "json", "content": model["content"]}, xsrf)
        assert put["status"] == 200, put


def fetch(loop: Loop, b, user: str) -> None:
    open_assignments(b)
    b.find_text("#released_assignments_list .list_item", ASSIGNMENT, 60)
    loop.shot(b, f"{user}-assignments-tab")
    b.find_text("#released_assignments_list button", "Fetch").click()
    b.find_text("#fetched_assignments_list button", "Submit", 60)


def submit(loop: Loop, b, user: str, name: str) -> None:
    before = len(loop.submitted.get(user, []))
    b.find_text("#fetched_assignments_list button", "Submit").click()

    def timestamps():
        found = re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ UTC", b.find("#submitted_assignments_list").text)
        return found if len(found) > before else None
    loop.submitted[user] = b.wait_for(timestamps, 120, "the submission in the list")
    time.sleep(0.5)
    loop.shot(b, f"{user}-{name}")


def formgrader_action(loop: Loop, b, icon: str, name: str) -> str:
    """Click an action of Formgrader's Manage Assignments page; return the log it shows."""
    b.open(loop.hub.user_url(INSTRUCTOR, "formgrader"))
    b.find(f".glyphicon-{icon}").click()
    modal = b.find("#success-modal, #error-modal", 300)
    time.sleep(0.5)
    loop.shot(b, name)
    text = modal.text
    assert modal.get_attribute("id") == "success-modal", text
    modal.find_element("css selector", ".modal-footer button").click()
    return text


def gradebook():
    from nbgrader.api import Gradebook

    return Gradebook


def run_the_loop(loop: Loop) -> None:
    hub = loop.hub
    course = hub.course

    # The instructor releases week2 in Formgrader.
    loop.step += 1
    with hub.browser_for(INSTRUCTOR, login_shot=f"{loop.step:02d}-instructor-login") as b:
        b.find_text(".lm-MenuBar-itemLabel", "Nbgrader").click()
        b.find_text(".lm-Menu-itemLabel", "Formgrader")
        loop.shot(b, "instructor-jupyterlab-nbgrader-menu")
        b.driver.find_element("css selector", "body").send_keys(Keys.ESCAPE)
        b.open(hub.user_url(INSTRUCTOR, "formgrader"))
        b.find(".glyphicon-cloud-upload")
        loop.shot(b, "instructor-formgrader")
        log = formgrader_action(loop, b, "cloud-upload", "instructor-released-week2")
        assert "Successfully released 'week2'" in log

    # w2-ann fetches, answers, validates and submits.
    with hub.browser_for(ANN) as b:
        fetch(loop, b, ANN)
        loop.shot(b, f"{ANN}-fetched")
        write_answers(loop, b, ANN, ann_answers())
        b.open(hub.user_url(ANN, f"lab/tree/{ASSIGNMENT}/fashion_mnist.ipynb"))
        cell = b.find_text(".jp-CodeCell", "train_images[:2000]", 120)
        b.scroll_to(cell)
        loop.shot(b, f"{ANN}-answers-in-notebook")
        b.click(".jp-NotebookPanel-toolbar [data-command='docmanager:save']")
        b.wait_for(lambda: not b.driver.find_elements("css selector", ".lm-TabBar-tab.jp-mod-dirty"), 30, "the save")
        open_assignments(b)
        b.find_text("#fetched_assignments_list a", ASSIGNMENT).click()
        for index, notebook in enumerate(NOTEBOOKS):
            started = time.monotonic()
            buttons = b.wait_for(lambda: [e for e in b.driver.find_elements("css selector", "#fetched_assignments_list button")
                                          if e.text == "Validate"] or None, 30, "Validate buttons")
            buttons[index].click()
            dialog = b.find(".jp-Dialog", 600)
            loop.timings[f"validate {notebook}"] = time.monotonic() - started
            time.sleep(0.5)
            loop.validation[notebook] = dialog.text
            loop.shot(b, f"{ANN}-validated-{notebook}")
            b.find(".jp-Dialog button.jp-mod-accept").click()
            b.wait_for(lambda: not b.driver.find_elements("css selector", ".jp-Dialog"), 30, "the dialog to close")
        submit(loop, b, ANN, "submitted")

    # w2-cem submits twice.
    with hub.browser_for(CEM) as b:
        fetch(loop, b, CEM)
        write_answers(loop, b, CEM, cem_first_answers())
        submit(loop, b, CEM, "first-submission")
        write_answers(loop, b, CEM, answers(recipes.all_but_training()))
        submit(loop, b, CEM, "second-submission")

    # The deadline passes: the instructor sets it to now in Formgrader.
    with hub.browser_for(INSTRUCTOR) as b:
        b.open(hub.user_url(INSTRUCTOR, "formgrader"))
        b.find(".glyphicon-pencil").click()
        modal = b.find("#edit-assignment-modal")
        loop.due = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        b.script("arguments[0].value = arguments[1]", modal.find_element("css selector", "input.modal-duedate"),
                 loop.due.strftime("%Y-%m-%dT%H:%M:%S"))
        zone = modal.find_element("css selector", "input.modal-timezone")
        zone.clear()
        zone.send_keys("UTC")
        loop.shot(b, "instructor-sets-due-date")
        modal.find_element("css selector", "button.save").click()
        b.wait_for(lambda: loop.due.strftime("%Y-%m-%d %H:%M:%S") in b.text(), 30, "the new due date")
        loop.shot(b, "instructor-due-date-set")
    time.sleep(1)

    # w2-bob submits after the deadline.
    with hub.browser_for(BOB) as b:
        fetch(loop, b, BOB)
        write_answers(loop, b, BOB, answers(recipes.all_but_training()))
        submit(loop, b, BOB, "late-submission")

    # The instructor collects in Formgrader.
    with hub.browser_for(INSTRUCTOR) as b:
        loop.collect_log = formgrader_action(loop, b, "cloud-download", "instructor-collected")

    # Root grades the class with the runner (README), keeping what it writes in the staff group.
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "coursekit.grading.runner", ASSIGNMENT], cwd=course.root, env=grading_env(),
                          capture_output=True, text=True, preexec_fn=lambda: os.umask(0o007), timeout=1800)
    loop.timings["runner"] = time.monotonic() - started
    (SHOTS / "runner.log").write_text(proc.stdout + proc.stderr)  # for a post-mortem of what follows
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # The TA marks w2-ann's answer to F2 with a comment in Formgrader.
    with hub.browser_for(TA) as b:
        listing = hub.user_url(TA, f"formgrader/gradebook/{ASSIGNMENT}/fashion_mnist")
        b.open(listing)
        b.find_text("td", "Submission #3", 60)
        # The staff's servers run the course's formgrader (sanitised pages, strict policy), not nbgrader's.
        assert "coursekit/static/formgrader.js" in b.driver.page_source
        b.find_text("button", "Show All Names").click()
        link = b.find_text("a[href*='/submissions/']", ANN, 30)
        loop.shot(b, "ta-manual-grading")
        link.click()
        score = b.find("#f2_why_split", 120)
        b.scroll_to(b.find_innermost("BEGIN MARK SCHEME"))
        loop.shot(b, "ta-mark-scheme-and-answer")
        score.clear()
        score.send_keys(str(TA_POINTS))
        comment = b.find("#f2_why_split-comment")
        comment.click()
        comment.send_keys(TA_COMMENT)
        b.script("arguments[0].blur()", comment)  # formgrader saves a mark when its box loses focus
        b.wait_for(lambda: ta_mark_saved(course), 60, "the TA's mark in the gradebook")
        b.scroll_to(score)
        loop.shot(b, "ta-marked-written-answer")
        b.open(listing)
        b.find_text("td", "Submission #3", 60)
        loop.shot(b, "ta-manual-grading-after")

    # The instructor generates and releases feedback in Formgrader.
    with hub.browser_for(INSTRUCTOR) as b:
        assert "Successfully generated feedback" in formgrader_action(loop, b, "comment", "instructor-generated-feedback")
        assert "Successfully released feedback" in formgrader_action(loop, b, "envelope", "instructor-released-feedback")

    # w2-ann fetches her feedback and reads it.
    with hub.browser_for(ANN) as b:
        open_assignments(b)
        b.find_text("#submitted_assignments_list button", "Fetch Feedback").click()
        link = b.find_text("#submitted_assignments_list a", "view feedback", 120)
        loop.shot(b, f"{ANN}-feedback-fetched")
        link.click()
        item = b.find_text(".jp-DirListing-item", "fashion_mnist.html", 60)
        ActionChains(b.driver).double_click(item).perform()
        b.find("iframe", 60)
        time.sleep(2)
        loop.shot(b, f"{ANN}-feedback-in-jupyterlab")
        stamp = loop.submitted[ANN][-1]
        for notebook in NOTEBOOKS:
            b.open(hub.user_url(ANN, f"files/{ASSIGNMENT}/feedback/{stamp}/{notebook}.html"))
            b.wait_for_text("Score", 60)
            loop.feedback_text[notebook] = b.text()
            loop.shot(b, f"{ANN}-feedback-{notebook}")
            if notebook == "fashion_mnist":
                b.scroll_to(b.find_innermost(TA_COMMENT))
                loop.shot(b, f"{ANN}-feedback-ta-comment")

    loop.graded = GradedClass(course, list(STUDENTS), "")
    loop.graded.read_gradebook()


def ta_mark_saved(course) -> bool:
    with gradebook()(course.db_url) as gb:
        nb = gb.find_submission_notebook("fashion_mnist", ASSIGNMENT, ANN)
        grade = next(g for g in nb.grades if g.name == "f2_why_split")
        comment = next(c for c in nb.comments if c.name == "f2_why_split")
        return grade.manual_score == TA_POINTS and comment.manual_comment == TA_COMMENT


@pytest.fixture(scope="module")
def loop():
    if os.geteuid() != 0:
        pytest.skip("the course hub makes Unix accounts and runs each user's server as that user: run as root")
    if not browser_helper.available():
        pytest.fail("headless Chromium or its WebDriver is missing: run bin/setup")
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    base = Path(tempfile.mkdtemp(prefix="coursekit-hub-test-", dir="/tmp"))
    started = time.monotonic()
    with RunningHub.start(base, SHOTS) as hub:
        state = Loop(hub)
        state.timings["hub start"] = time.monotonic() - started
        run_the_loop(state)
        state.timings["whole loop"] = time.monotonic() - started
        (SHOTS / "timings.json").write_text(json.dumps(state.timings, indent=1) + "\n")
        yield state


# --- what each person gets ---------------------------------------------------------------------


def test_validation_passes_for_the_answered_notebooks(loop):
    for notebook in NOTEBOOKS:
        assert "Success! Your notebook passes all the tests." in loop.validation[notebook], loop.validation


def test_student_sees_score_ta_comment_and_no_hidden_test(loop):
    from nbgrader.api import Gradebook

    with Gradebook(loop.hub.course.db_url) as gb:
        nb = gb.find_submission_notebook("fashion_mnist", ASSIGNMENT, ANN)
        total, maximum = nb.score, nb.max_score
    assert loop.graded.scores[(ANN, "fashion_mnist", "f2_why_split")] is None  # written: only the TA marks it
    page = loop.feedback_text["fashion_mnist"]
    assert f"Score: {total:.1f} / {maximum:.1f}" in page, page[:500]
    assert TA_COMMENT in page
    assert f"Score: {TA_POINTS:.1f} / 2.0" in page  # the F2 written response
    for notebook in NOTEBOOKS:
        text = loop.feedback_text[notebook]
        for kind in ("hidden test", "mark scheme"):
            lines = secret_lines(notebook)[kind]
            assert lines
            leaked = sorted(line for line in lines if line in text)
            assert not leaked, f"{kind} lines in {ANN}'s feedback on {notebook}:\n" + "\n".join(leaked)


def graded_outputs(course, student: str, notebook: str, gid: str) -> str:
    """What the grader's run of a cell printed, to say why a score differs."""
    path = course.layout.autograded(student, ASSIGNMENT) / f"{notebook}.ipynb"
    if not path.is_file():
        return f"no {path}"
    errors = {notebook_vocab.grade_id(c) or f"cell {i}": [(o.get("ename"), str(o.get("evalue"))[:300])
                                                          for o in c.get("outputs", []) if o.get("output_type") == "error"]
              for i, c in enumerate(builder.read(path).cells)}
    problems = path.parent / coursekit_problems.FILENAME
    return json.dumps({"errors": {k: v for k, v in errors.items() if v},
                       "problems": problems.read_text()[:2000] if problems.is_file() else None})


def test_latest_submission_collected_and_late_one_penalised(loop):
    assert "Collecting submission: " + BOB in loop.collect_log
    assert len(loop.submitted[CEM]) == 2
    course = loop.hub.course
    for student in STUDENTS:
        stamp = (course.layout.submitted(student, ASSIGNMENT) / "timestamp.txt").read_text().strip()
        assert stamp == loop.submitted[student][-1], (student, stamp, loop.submitted[student])
    assert datetime.datetime.fromisoformat(loop.submitted[CEM][-1].replace(" UTC", "+00:00")) < loop.due
    assert datetime.datetime.fromisoformat(loop.submitted[BOB][-1].replace(" UTC", "+00:00")) > loop.due
    penalties = loop.graded.late_penalties
    for notebook in NOTEBOOKS:
        assert penalties[(ANN, notebook)] == 0 and penalties[(CEM, notebook)] == 0
    assert penalties[(BOB, "fashion_mnist")] > 0  # its autograded points are > 0, so 10 % of them
    # Both handed in the all-but-training answers: their cells score as that reference submission.
    expected = read_expected_scores()
    for student in (BOB, CEM):
        for (name, notebook, gid), score in expected.items():
            if name == "all-but-training" and score not in ("manual",) and gid != "late_penalty":
                assert loop.graded.scores[(student, notebook, gid)] == float(score), (
                    student, notebook, gid, graded_outputs(course, student, notebook, gid))


# --- who can read what -------------------------------------------------------------------------


def test_students_cannot_read_the_course_the_exchange_or_the_grading_tools(loop):
    hub, course = loop.hub, loop.hub.course.root
    inbound = hub.hub.exchange / loop.hub.hub.course_id() / "inbound"
    ann_submission = next(p for p in inbound.iterdir() if p.name.startswith(ANN + "+") and p.owner() == ANN)
    secret = [
        course, course / "gradebook" / "gradebook.db", course / "source" / ASSIGNMENT / "fashion_mnist.ipynb",
        course / "submitted" / ANN / ASSIGNMENT / "fashion_mnist.ipynb",
        course / "autograded" / ANN / ASSIGNMENT / "fashion_mnist.ipynb",
        course / "feedback" / ANN / ASSIGNMENT / "fashion_mnist.html",
        inbound, ann_submission / "fashion_mnist.ipynb", ann_submission / "submission_secret.txt",
        hub.hub.exchange / loop.hub.hub.course_id() / "feedback",
        REPO_ROOT, REPO_ROOT / "source" / ASSIGNMENT / "fashion_mnist.ipynb", REPO_ROOT / "coursekit" / "execution" / "sandbox.py",
        REPO_ROOT / ".venv" / "bin" / "python", REPO_ROOT / ".git", hub.hub.state / "passwords.json",
    ]
    for path in secret:
        assert path.exists(), path
        for student in (BOB, CEM):
            command = ["ls", str(path)] if path.is_dir() else ["cat", str(path)]
            proc = hub.run_as(student, *command)
            assert proc.returncode != 0 and "Permission denied" in proc.stderr, (student, path, proc.stdout[:200])
    # The same commands work where they should: the checks above can fail.
    assert hub.run_as(TA, "test", "-r", str(course / "gradebook" / "gradebook.db")).returncode == 0
    assert hub.run_as(INSTRUCTOR, "ls", str(inbound)).returncode == 0
    assert hub.run_as(ANN, "cat", str(hub.hub.homes / ANN / ASSIGNMENT / "fashion_mnist.ipynb")).returncode == 0
    assert hub.run_as(BOB, "ls", str(hub.hub.exchange / loop.hub.hub.course_id() / "outbound" / ASSIGNMENT)).returncode == 0


def test_a_stock_nbgrader_submission_would_be_readable_by_other_students(loop):
    """The hub's students' nbgrader closes each submission to other students; stock nbgrader's
    submit, run by the same student into the same exchange, leaves it open to anyone who
    learns its name."""
    hub = loop.hub
    inbound = hub.hub.exchange / hub.hub.course_id() / "inbound"
    before = set(inbound.iterdir())
    stock = "--ExchangeFactory.submit=nbgrader.exchange.default.submit.ExchangeSubmit"
    proc = hub.run_as(CEM, "nbgrader", "submit", ASSIGNMENT, stock)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (stock_submission,) = set(inbound.iterdir()) - before
    course_submission = next(p for p in before if p.name.startswith(CEM + "+"))
    assert hub.run_as(BOB, "cat", str(stock_submission / "submission_secret.txt")).returncode == 0
    assert hub.run_as(BOB, "cat", str(course_submission / "submission_secret.txt")).returncode != 0
    shutil.rmtree(stock_submission)


def test_students_kernel_has_the_students_package_only(loop):
    script = ("import coursekit, coursekit.student.checks, coursekit.student.datasets as d; print(coursekit.__file__); "
              "(x, y), _ = d.load_fashion_mnist(); print(x.shape)\n"
              "try:\n import coursekit.grading.runner\nexcept ModuleNotFoundError: print('no grading modules')")
    proc = loop.hub.run_as(ANN, "python", "-c", script)
    assert proc.returncode == 0, proc.stderr
    assert str(loop.hub.hub.env) in proc.stdout and "(60000, 28, 28)" in proc.stdout
    assert "no grading modules" in proc.stdout


# --- collect believes no student's word ------------------------------------------------------


def collect_into(loop: Loop, name: str, *options: str, check: bool = True) -> tuple[str, Path]:
    """The instructor's `nbgrader collect week2` into a scratch course folder; (log, submitted/)."""
    hub = loop.hub
    scratch = hub.base / f"collect-{name}"
    scratch.mkdir()
    os.chown(scratch, pwd.getpwnam(INSTRUCTOR).pw_uid, hub.staff_gid())
    proc = hub.run_as(INSTRUCTOR, "nbgrader", "collect", ASSIGNMENT, "--course", hub.hub.course_id(), *options, cwd=scratch)
    assert proc.returncode == 0 or not check, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr, scratch / "submitted"


STOCK_COLLECT = "--ExchangeFactory.collect=nbgrader.exchange.default.collect.ExchangeCollect"


def stated_time(submitted: Path, student: str) -> datetime.datetime:
    text = (submitted / student / ASSIGNMENT / "timestamp.txt").read_text().strip()
    return datetime.datetime.fromisoformat(text.replace(" UTC", "+00:00"))


def test_collect_skips_work_handed_in_under_another_students_name(loop):
    hub = loop.hub
    proc = hub.run_as(BOB, "nbgrader", "submit", ASSIGNMENT, f"--student={ANN}")  # bob's work, ann's name
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ann_time = loop.submitted[ANN][-1]
    stock_log, stock = collect_into(loop, "stock-spoof", STOCK_COLLECT)
    assert "cheating attempt?" in stock_log  # stock nbgrader notices, and takes it anyway
    assert (stock / ANN / ASSIGNMENT / "timestamp.txt").read_text().strip() != ann_time
    assert (stock / ANN / ASSIGNMENT / "fashion_mnist.ipynb").read_text() == \
        (hub.hub.homes / BOB / ASSIGNMENT / "fashion_mnist.ipynb").read_text()
    log, ours = collect_into(loop, "verified-spoof")
    assert f"handed in under the name {ANN} by the account {BOB}" in log
    assert (ours / ANN / ASSIGNMENT / "timestamp.txt").read_text().strip() == ann_time
    for spoof in [p for p in (hub.hub.exchange / hub.hub.course_id() / "inbound").iterdir() if p.owner() == BOB
                  and p.name.startswith(ANN + "+")]:
        shutil.rmtree(spoof)


def test_collect_dates_a_submission_changed_after_it_was_handed_in(loop):
    hub = loop.hub
    inbound = hub.hub.exchange / hub.hub.course_id() / "inbound"
    newest = max((p for p in inbound.iterdir() if p.name.startswith(CEM + "+") and p.owner() == CEM), key=lambda p: p.name)
    assert datetime.datetime.now(datetime.timezone.utc) > loop.due + datetime.timedelta(seconds=90)
    # After the deadline w2-cem edits the work she handed in before it (the files are hers).
    proc = hub.run_as(CEM, "sh", "-c", f"echo ' ' >> '{newest}/mnist.ipynb'")
    assert proc.returncode == 0, proc.stderr
    _, stock = collect_into(loop, "stock-edit", STOCK_COLLECT)
    assert stated_time(stock, CEM) < loop.due  # stock: the edited work counts as on time
    log, ours = collect_into(loop, "verified-edit")
    assert "after the time it states" in log
    assert stated_time(ours, CEM) > loop.due
    assert (ours / CEM / ASSIGNMENT / "mnist.ipynb").read_text().endswith(" \n")


def test_collect_follows_no_link_a_student_plants_in_a_hand_in(loop):
    """After handing in, w2-ann replaces a handed-in notebook with a link to the course's source
    notebook (solution, hidden tests, mark schemes) and adds a dangling link. Stock collect, as
    the instructor, copies the solution into her submission as an ordinary file, and stops at the
    dangling link; the course's collect refuses both, records them for her, collects everyone."""
    from coursekit.submissions import intake

    hub = loop.hub
    inbound = hub.hub.exchange / hub.hub.course_id() / "inbound"
    proc = hub.run_as(ANN, "nbgrader", "submit", ASSIGNMENT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    newest = max((p for p in inbound.iterdir() if p.name.startswith(ANN + "+") and p.owner() == ANN), key=lambda p: p.name)
    try:
        solution = hub.hub.course / "source" / ASSIGNMENT / "fashion_mnist.ipynb"
        proc = hub.run_as(ANN, "sh", "-c", f"ln -sf '{solution}' '{newest}/fashion_mnist.ipynb' && "
                                           f"ln -s /nonexistent/notes '{newest}/notes.txt'")
        assert proc.returncode == 0, proc.stderr
        assert hub.run_as(ANN, "cat", str(solution)).returncode != 0  # she cannot read it herself
        stock_log, stock = collect_into(loop, "stock-link", STOCK_COLLECT, check=False)
        assert "/nonexistent/notes" in stock_log or "notes.txt" in stock_log  # copytree raised: collect stopped there
        taken = stock / ANN / ASSIGNMENT / "fashion_mnist.ipynb"
        assert not taken.is_symlink() and "### BEGIN SOLUTION" in taken.read_text()
        log, ours = collect_into(loop, "verified-link")
        assert sorted(p.name for p in ours.iterdir()) == sorted(STUDENTS)
        assert not (ours / ANN / ASSIGNMENT / "fashion_mnist.ipynb").exists()
        assert (ours / ANN / ASSIGNMENT / "mnist.ipynb").is_file()
        record = json.loads((ours / ANN / ASSIGNMENT / intake.COLLECT_RECORD).read_text())
        assert sorted(r["path"] for r in record["refused"]) == ["fashion_mnist.ipynb", "notes.txt"]
        assert "'fashion_mnist.ipynb' in your submission was not accepted: it is a symbolic link" in log
        assert not any("### BEGIN SOLUTION" in p.read_text(errors="replace")
                       for p in (ours / ANN / ASSIGNMENT).iterdir() if p.is_file())
    finally:
        shutil.rmtree(newest)
