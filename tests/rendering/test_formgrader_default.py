"""Safe by default: a TA who starts Jupyter in the course root the usual way (``jupyter server``,
``jupyter lab``, ``jupyter notebook``, no ``--config``) gets the course's formgrader and its
Content-Security-Policy, because bin/setup installed them into the environment's Jupyter config
(``coursekit.rendering.formgrader.install_default_config``). Jupyter Server 2 reads no config from its
working directory: without that file, the same command in the same folder (which holds the
course's ``jupyter_server_config.py``) serves nbgrader's stock formgrader, and a student's
script runs in the TA's page.

A hostile class is graded once for the module (tests/rendering/test_ta_pages.py's, without its markdown
bomb); each test starts a real Jupyter server on 127.0.0.1 with a token, as root, in a
subprocess, and one headless Chromium (tests/browser.py) opens the submission as a TA would.
Screenshots: build/screenshots/formgrader_default/.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import sys
from pathlib import Path

import pytest

from browser import Browser
from builder import ASSIGNMENT
from coursekit.rendering.formgrader import (CONTENT_SECURITY_POLICY, DEFAULT_CONFIG_FILE, STOCK_FORMGRADER, default_config,
                                  install_default_config)
from hostile_pages import PWNED_PREFIX, pwned_files
from test_ta_pages import (NOTEBOOK, REPO, JupyterServer, canary, grade_hostile_class, log_in,  # noqa: F401 (canary)
                           open_manual_grading, stock_jupyter_config, traces)

SHOTS = REPO / "build" / "screenshots" / "formgrader_default"
# What the written answer and the outputs carry (tests/hostile_pages.py) that stock formgrader runs.
RUN_BY_STOCK = {"written-img", "written-script", "output-html", "output-js", "student-id"}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, canary):  # noqa: F811
    base, course, stock, student, payloads = grade_hostile_class(tmp_path_factory.mktemp("formgrader_default"), canary, 0)
    return base, course, student, payloads, stock


@pytest.fixture(scope="module")
def browser():
    with Browser.start(screenshots=SHOTS) as b:
        yield b


@pytest.fixture
def clean_root(hostile):
    """No trace of an earlier test's payloads in the course root."""
    _, course, _, _, stock = hostile
    for path in [*course.root.glob(PWNED_PREFIX + "*"), *stock.root.glob(PWNED_PREFIX + "*")]:
        path.unlink()
    return course


def submission_path(course, student: str) -> str:
    with course.layout.gradebook() as gb:
        return f"/formgrader/submissions/{gb.find_submission_notebook(NOTEBOOK, ASSIGNMENT, student).id}/"


# --- the installed file -----------------------------------------------------------------------


def test_setup_installed_the_course_formgrader_into_this_environment():
    """bin/setup ran ``install_default_config(.venv)``: the file is there, and it is the last of the
    folder's files that Jupyter merges (after nbgrader's nbgrader.json, which enables stock formgrader)."""
    folder = Path(sys.prefix) / "etc" / "jupyter" / "jupyter_server_config.d"
    assert json.loads((folder / DEFAULT_CONFIG_FILE).read_text()) == default_config()
    assert (folder / "nbgrader.json").exists()
    assert sorted(p.name for p in folder.glob("*.json"))[-1] == DEFAULT_CONFIG_FILE


def test_install_default_config_writes_a_readable_file_once(tmp_path):
    path = install_default_config(tmp_path)
    assert path == tmp_path / "etc" / "jupyter" / "jupyter_server_config.d" / DEFAULT_CONFIG_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    mtime = path.stat().st_mtime_ns
    assert install_default_config(tmp_path) == path and path.stat().st_mtime_ns == mtime
    hub = json.loads(install_default_config(tmp_path / "hub", course_formgrader=False).read_text())
    assert hub == {"ServerApp": {"jpserver_extensions": {STOCK_FORMGRADER: False}}}


# --- a real server, started as a TA starts it --------------------------------------------------


def assert_course_page(server: JupyterServer, course, student: str) -> None:
    status, headers, page = server.get(submission_path(course, student))
    assert status == 200, page[-2000:]
    assert headers.get("Content-Security-Policy") == CONTENT_SECURITY_POLICY
    assert 'id="coursekit-page-data"' in page  # the course's submission view (FormgradeExporter)
    assert "<img src=x onerror" not in page and "&lt;img src=x onerror=" in page
    assert "coursekit.rendering.formgrader: nbgrader's formgrader with the course's pages" in server.log_path.read_text()


@pytest.mark.parametrize("command", ["server", "lab"])
def test_jupyter_started_without_config_serves_the_course_formgrader(command, hostile, clean_root, browser,
                                                                     canary):  # noqa: F811
    base, course, student, payloads, _ = hostile
    server = JupyterServer(course.root, base / "runtime", command=command)  # no --config
    try:
        assert_course_page(server, course, student)
        canary.hits.clear()
        log_in(browser, server)
        open_manual_grading(browser, server, student)
        assert "<img src=x onerror=" in browser.text()  # shown as text
        seen = traces(canary, server, payloads)
        browser.shot(f"01-jupyter-{command}-no-config")
        assert seen["ran"] == set() and seen["canary"] == [] and seen["terminals"] == [], seen
    finally:
        server.stop()


def test_jupyter_notebook_started_without_config_serves_the_course_formgrader(hostile, clean_root):
    base, course, student, _, _ = hostile
    server = JupyterServer(course.root, base / "runtime", command="notebook")
    try:
        assert_course_page(server, course, student)
    finally:
        server.stop()


def test_without_the_installed_config_jupyter_serves_stock_formgrader(hostile, clean_root, browser, canary):  # noqa: F811
    """The damage the installed file prevents: the same ``jupyter server`` in a course folder that
    holds the course's ``jupyter_server_config.py`` (not read), the environment's config as
    nbgrader installs it. The folder is the class's stock twin (tests/rendering/test_ta_pages.py: its
    notebook as stock nbgrader's autograde leaves it; stock formgrader answers HTTP 500 for a
    written answer whose pasted image the course's autograde dropped)."""
    base, _, student, payloads, course = hostile
    shutil.copy(REPO / "jupyter_server_config.py", course.root)
    server = JupyterServer(course.root, base / "runtime",
                           env={"JUPYTER_CONFIG_PATH": str(stock_jupyter_config(base / "stock-config"))})
    try:
        status, headers, page = server.get(submission_path(course, student))
        assert status == 200
        assert "script-src" not in headers.get("Content-Security-Policy", "")  # Jupyter's default policy
        assert 'id="coursekit-page-data"' not in page  # nbgrader's own view, the student's <img onerror> in it:
        assert re.search(r"<img [^>]*onerror=", page)
        canary.hits.clear()
        log_in(browser, server)
        open_manual_grading(browser, server, student)
        seen = traces(canary, server, payloads)
        browser.shot("02-jupyter-server-stock-config")
        assert RUN_BY_STOCK <= seen["ran"], seen
        assert seen["terminals"], "a payload opened a terminal as the TA"
        assert pwned_files(course.root)
    finally:
        server.stop()
