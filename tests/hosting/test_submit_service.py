"""Grading on submit (coursekit/hosting/submit_service.py) on the real course hub: students hand in
through nbgrader's exchange, the service that bin/hub starts as a JupyterHub-managed service
grades and releases their feedback, no staff action.

One hub for the module (tests/hub_session.py) with ``c.SubmitGrading.enabled = True``, a due
date in the future and at most one grading per student per hour; w2-ann and w2-bob hand in the
``all-but-training`` reference answers (no training: cheap, and every hidden accuracy check fails
with a hint, which must not reach them before the deadline). The service is killed with SIGKILL
while it grades w2-bob's hand-in; JupyterHub starts it again. Each grading costs about two
minutes on the shared 2-core machine.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import nbformat
import pytest

import hub_session
from builder import ASSIGNMENT, NOTEBOOKS
from conftest import region_lines
from coursekit.core.course import REPO_ROOT, Course
from coursekit.hosting.submit_service import STATE
from hub_session import INSTRUCTOR, STUDENTS, RunningHub
from test_release import secret_lines


ANN, BOB, CEM = STUDENTS
ANSWERS = REPO_ROOT / "tests" / "fixtures" / "submissions" / "all-but-training" / ASSIGNMENT
SHOTS = REPO_ROOT / "build" / "screenshots" / "submit-service"
TEST_SETTINGS = ('\n# grading on submit, tests/hosting/test_submit_service.py\n'
                 'c.SubmitGrading.enabled = True\n'
                 'c.SubmitGrading.max_per_hour = 1\n'
                 'c.SubmitGrading.poll_seconds = 2\n'
                 'c.CourseSchedule.due_dates = {"week2": "2030-01-01 00:00:00 UTC"}\n')


UNSTABLE_SOFTMAX = ("def softmax(x):\n"
                    "    x = np.asarray(x, dtype=float)\n"
                    "    with np.errstate(over='ignore', invalid='ignore'):\n"
                    "        exps = np.exp(x)\n"
                    "        return exps / np.sum(exps, axis=-1, keepdims=True)\n")


def answers_failing_a_hidden_check(folder: Path) -> Path:
    """all-but-training with a softmax that overflows: the public part of F4's check passes, its
    hidden part fails with a hint that is written only in the hidden tests."""
    shutil.copytree(ANSWERS, folder, dirs_exist_ok=True)
    path = folder / "fashion_mnist.ipynb"
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "f4_functions")
    start = cell.source.index("def softmax(x):")
    end = cell.source.index("\n\n\nprint(softmax")
    cell.source = cell.source[:start] + UNSTABLE_SOFTMAX + cell.source[end:]
    nbformat.write(nb, path)
    return folder


# --- what students and the staff do (also used by benchmarks/submit_burst.py) -------------------


def start_hub(base: Path, settings: str = TEST_SETTINGS, screenshots: Path | None = None) -> RunningHub:
    """bin/hub's program with the service on: the course copy gets ``settings`` appended before
    the hub prepares it (the hub reads the policy from it)."""
    original = hub_session.Course

    class CourseWithService(original):
        @classmethod
        def copy_of(cls, target, repo=REPO_ROOT):
            course = original.copy_of(target, repo)
            with open(course.root / "nbgrader_config.py", "a") as f:
                f.write(settings)
            return course

    hub_session.Course = CourseWithService
    try:
        hub = RunningHub.start(base, screenshots)
    finally:
        hub_session.Course = original
    try:
        proc = hub.run_as(INSTRUCTOR, "nbgrader", "release_assignment", ASSIGNMENT, "--force", cwd=hub.hub.course)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    except BaseException:
        hub.stop()
        raise
    return hub


def hand_in(hub: RunningHub, student: str, answers: Path = ANSWERS) -> float:
    """``student`` fetches week2 (once), puts ``answers`` in, and submits; returns when."""
    home = hub.hub.homes / student
    if not (home / ASSIGNMENT).is_dir():
        proc = hub.run_as(student, "nbgrader", "fetch_assignment", ASSIGNMENT)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for notebook in answers.glob("*.ipynb"):
        target = home / ASSIGNMENT / notebook.name
        shutil.copyfile(notebook, target)
        shutil.chown(target, student, student)
    submitted = time.time()
    proc = hub.run_as(student, "nbgrader", "submit", ASSIGNMENT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return submitted


def feedback_pages(hub: RunningHub, student: str) -> dict[str, dict[str, str]]:
    """``student`` fetches feedback (nbgrader fetch_feedback, as the Assignments tab does):
    hand-in timestamp -> notebook -> page."""
    hub.run_as(student, "nbgrader", "fetch_feedback", ASSIGNMENT)
    found: dict[str, dict[str, str]] = {}
    root = hub.hub.homes / student / ASSIGNMENT / "feedback"
    if root.is_dir():
        for folder in root.iterdir():
            found[folder.name] = {p.stem: p.read_text(errors="replace") for p in folder.glob("*.html")}
    return found


def wait_for_feedback(hub: RunningHub, student: str, count: int = 1, timeout: float = 1500,
                      what=lambda pages: True) -> dict[str, dict[str, str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pages = feedback_pages(hub, student)
        ready = {k: v for k, v in pages.items() if len(v) == len(NOTEBOOKS) and what(v)}
        if len(ready) >= count:
            return pages
        time.sleep(5)
    raise TimeoutError(f"no feedback for {student} within {timeout:.0f} s; hub log:\n"
                       + (hub.hub.state / "jupyterhub.log").read_text(errors="replace")[-4000:])


def journal_records(hub: RunningHub) -> list[dict]:
    path = hub.hub.course / STATE / f"journal-{ASSIGNMENT}" / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def service_pids(hub: RunningHub) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"coursekit.hosting.submit_service" in cmd and str(hub.hub.course).encode() in cmd:
                pids.append(int(entry.name))
    return pids


# --- what must not reach a student before the deadline --------------------------------------------


def hidden_hints(notebook: str) -> set[str]:
    """The hint texts written in the hidden test regions of the source notebook."""
    nb = nbformat.read(REPO_ROOT / "source" / ASSIGNMENT / f"{notebook}.ipynb", as_version=4)
    hints, public = set(), []
    for cell in nb.cells:
        hidden = region_lines(cell.source, "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
        hints.update(re.findall(r'hint\s*=\s*f?"([^"{}]{20,})', "\n".join(hidden)))
        public += [line for line in cell.source.split("\n") if line not in hidden]
    public_text = "\n".join(public)
    return {h for h in hints if h not in public_text}  # a hint the public part also gives is no secret


def readings(page: str) -> list[str]:
    """The page as it is, html-unescaped, and every base64 blob in it decoded."""
    texts = [page, html.unescape(page)]
    for blob in re.findall(r"[A-Za-z0-9+/]{40,}={0,2}", page):
        try:
            texts.append(base64.b64decode(blob + "=" * (-len(blob) % 4)).decode("utf-8", "ignore"))
        except (binascii.Error, ValueError):
            pass
    return texts


def leaks(pages: dict[str, str]) -> list[str]:
    found = []
    for notebook, page in pages.items():
        secrets = secret_lines(notebook)
        forbidden = set(secrets.get("hidden test", set())) | hidden_hints(notebook)
        for text in readings(page):
            found += [f"{notebook}: {s}" for s in forbidden if s in text]
    return sorted(set(found))


# --- the hub, once for the module ---------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the hub makes Unix accounts: root only")
    SHOTS.mkdir(parents=True, exist_ok=True)
    # Under /tmp itself: the accounts must reach their homes (pytest's own folders are root's, 0700).
    hub = start_hub(Path(tempfile.mkdtemp(prefix="coursekit-submit-hub-", dir="/tmp")), screenshots=SHOTS)
    record: dict = {"hub": hub}
    try:
        # w2-ann hands in; the service grades and releases, nobody of the staff does anything.
        answers = answers_failing_a_hidden_check(hub.base / "ann-answers")
        record["ann_submitted"] = hand_in(hub, ANN, answers)
        record["ann_pages"] = wait_for_feedback(hub, ANN)
        record["ann_seconds"] = time.time() - record["ann_submitted"]
        # She hands in again at once: over the limit (one per hour).
        hand_in(hub, ANN)
        record["ann_pages_2"] = wait_for_feedback(hub, ANN, 2, 300)
        # w2-bob hands in; the service is killed (SIGKILL) while it grades his hand-in.
        hand_in(hub, BOB)
        deadline = time.monotonic() + 600
        while not any(r["op"] == "grading" and r["student"] == BOB for r in journal_records(hub)):
            assert time.monotonic() < deadline, "the service did not start grading w2-bob"
            time.sleep(2)
        time.sleep(20)  # inside nbgrader autograde
        record["killed"] = service_pids(hub)
        for pid in record["killed"]:
            os.kill(pid, signal.SIGKILL)
        # w2-cem hands in while it is down; JupyterHub starts the service again.
        hand_in(hub, CEM)
        record["bob_pages"] = wait_for_feedback(hub, BOB)
        record["cem_pages"] = wait_for_feedback(hub, CEM)
        record["journal"] = journal_records(hub)
        record["shadow"] = hub.hub.course / STATE / "course"
        yield record
    finally:
        hub.stop()


@pytest.mark.slow
def test_feedback_appears_for_the_student_with_no_staff_action(served):
    pages = served["ann_pages"]
    graded = [p for p in pages.values() if all("Not graded yet" not in page for page in p.values())]
    assert graded, pages.keys()
    assert set(graded[0]) == set(NOTEBOOKS)
    course = Course(served["hub"].hub.course)
    # the staff's course is untouched: nothing collected, graded or fed back there
    for step in ("submitted", "autograded", "feedback"):
        assert not (course.root / step / ANN).exists(), step
    print(f"w2-ann: submit -> feedback visible in {served['ann_seconds']:.0f} s")


@pytest.mark.slow
def test_no_hidden_test_line_and_no_hidden_hint_before_the_deadline(served):
    for pages in [*served["ann_pages"].values(), *served["bob_pages"].values(), *served["cem_pages"].values()]:
        assert not leaks(pages)
    # w2-ann's page says that F4's hidden check failed, without its hint ...
    ann = next(p for p in served["ann_pages"].values() if "Not graded yet" not in p["fashion_mnist"])
    assert "hints of hidden checks are shown in the feedback after the deadline" in html.unescape(ann["fashion_mnist"])
    # ... and the same feedback with hints allowed (the policy off) gives the hidden hint away:
    # the test can fail.
    shadow = Course(served["shadow"])
    student = ANN  # each student's graded copy stays in the service's course copy
    shadow.nbgrader("generate_feedback", ASSIGNMENT, f"--student={student}", "--force",
                    "--CourseFeedback.hidden_hints=True")
    open_pages = {nb: (shadow.root / "feedback" / student / ASSIGNMENT / f"{nb}.html").read_text() for nb in NOTEBOOKS}
    assert leaks(open_pages)


@pytest.mark.slow
def test_a_student_over_the_limit_is_told_when_the_next_grading_is_possible(served):
    notices = [p for p in served["ann_pages_2"].values() if all("Not graded yet" in page for page in p.values())]
    assert notices, served["ann_pages_2"].keys()
    text = html.unescape(next(iter(notices[0].values())))
    assert re.search(r"Next grading possible at: <strong>\d{4}-\d\d-\d\d \d\d:\d\d UTC</strong>", text), text
    assert not leaks(notices[0])


@pytest.mark.slow
def test_killed_mid_grading_then_restarted_grades_every_submission_exactly_once(served):
    assert served["killed"], "the service was not running"
    records = served["journal"]
    done = [(r["student"], r["stamp"]) for r in records if r["op"] == "done"]
    assert len(done) == len(set(done))  # nothing graded twice
    for student in (ANN, BOB, CEM):
        assert any(s == student for s, _ in done), student  # nothing lost
    bob_starts = [r for r in records if r["op"] == "grading" and r["student"] == BOB]
    assert len(bob_starts) == 2  # the killed grading and its one retry
    bob_done = [r for r in records if r["op"] == "done" and r["student"] == BOB]
    assert bob_done[0]["ok"], bob_done


@pytest.mark.slow
@pytest.mark.browser
def test_the_student_sees_the_feedback_in_the_assignments_tab(served):
    import browser as browser_helper

    if not browser_helper.available():
        pytest.skip("no Chromium")
    from test_hub import open_assignments

    hub = served["hub"]
    with hub.browser_for(BOB) as b:
        open_assignments(b)
        buttons = [e for e in b.driver.find_elements("css selector", "#submitted_assignments_list button")
                   if e.text == "Fetch Feedback"]
        if buttons:
            buttons[0].click()
        link = b.find_text("#submitted_assignments_list a", "view feedback", 120)
        b.shot("bob-feedback-in-assignments-tab")
        assert link.is_displayed()


# --- cheap: what the service's release may replace ------------------------------------------------


def test_the_service_never_replaces_feedback_the_staff_released(tmp_path):
    """A page in the exchange that the service did not write (the instructor's release, as the
    instructor) is kept by the service's release; the staff's own release replaces any page."""
    import pwd

    from nbgrader.auth import Authenticator
    from nbgrader.coursedir import CourseDirectory

    from coursekit.submissions.exchange import SafeReleaseFeedback
    from coursekit.hosting.submit_service import ServiceRelease

    if os.geteuid() != 0:
        pytest.skip("pages must belong to another account")
    (tmp_path / "staff.html").write_text("staff")
    os.chown(tmp_path / "staff.html", pwd.getpwnam("nobody").pw_uid, -1)
    (tmp_path / "service.html").write_text("service")
    apps = {cls: cls(coursedir=CourseDirectory(), authenticator=Authenticator()) for cls in (ServiceRelease, SafeReleaseFeedback)}
    for app in apps.values():
        app.dest_path = str(tmp_path)
    assert not apps[ServiceRelease].may_replace("staff.html", b"x")
    assert apps[ServiceRelease].may_replace("service.html", b"x")
    assert apps[ServiceRelease].may_replace("new.html", b"x")
    assert apps[SafeReleaseFeedback].may_replace("staff.html", b"x")  # without the guard it would be replaced


def test_the_hub_runs_no_service_unless_the_course_enables_it(tmp_path):
    """Off by default: bin/hub's settings name no service (today's hub, exactly); on: one."""
    from coursekit.hosting import hub as hubmod

    course = Course.copy_of(tmp_path / "course")
    roster = hubmod.Roster("w2-prof", ("w2-ta",), ("w2-ann",), "w2-staff")
    hub = hubmod.Hub(course=course.root, home=tmp_path / "hub", env=tmp_path / "env", roster=roster,
                     homes=tmp_path / "home", port=18000, data_dir=None)
    assert hub.services() == []
    with open(course.root / "nbgrader_config.py", "a") as f:
        f.write("\nc.SubmitGrading.enabled = True\n")
    (service,) = hub.services()
    assert service["name"] == "submit-grading" and "coursekit.hosting.submit_service" in service["command"]
