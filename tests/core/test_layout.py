"""coursekit.core.layout: one CourseLayout reads nbgrader_config.py and says where everything is,
the way nbgrader itself would put it, from any working directory."""

from __future__ import annotations

import os
import subprocess

import pytest

from builder import ASSIGNMENT
from coursekit.execution import sandbox
from coursekit.core.course import REPO_ROOT, Course
from coursekit.core.layout import CourseLayout, NotACourse, absolute_db_url


@pytest.fixture
def course(tmp_path) -> Course:
    """A course copy (config and source only: nothing is generated)."""
    return Course.copy_of(tmp_path / "course")


def test_the_config_is_read_from_the_root_without_changing_directory(course, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    layout = CourseLayout.load(course.root)
    assert os.getcwd() == str(elsewhere)
    assert layout.root == course.root.resolve()
    assert layout.course_id == "tf-week2-vision"
    # nbgrader_config.py says sqlite:///gradebook/gradebook.db, relative to the course root
    assert layout.db_url == f"sqlite:///{course.root.resolve()}/gradebook/gradebook.db"
    assert layout.gradebook_path == course.root.resolve() / "gradebook" / "gradebook.db"
    assert layout.due_dates == {ASSIGNMENT: "2026-12-04 23:59:00 UTC"}
    assert sandbox.course_settings(layout) == sandbox.Settings(enabled=True, memory="8G", wall_time=1200, file_size="1G")


def test_paths_are_nbgraders_own(course):
    layout = CourseLayout.load(course.root)
    root = course.root.resolve()
    assert layout.source(ASSIGNMENT) == root / "source" / ASSIGNMENT
    assert layout.release(ASSIGNMENT) == root / "release" / ASSIGNMENT
    assert layout.submitted("ada", ASSIGNMENT) == root / "submitted" / "ada" / ASSIGNMENT
    assert layout.autograded("ada", ASSIGNMENT) == root / "autograded" / "ada" / ASSIGNMENT
    assert layout.feedback("ada", ASSIGNMENT) == root / "feedback" / "ada" / ASSIGNMENT


def test_a_course_with_another_directory_structure_is_followed(course):
    """Step folders and the directory structure come from the config, as nbgrader reads them."""
    with open(course.root / "nbgrader_config.py", "a") as f:
        f.write('\nc.CourseDirectory.submitted_directory = "handed-in"\n'
                'c.CourseDirectory.directory_structure = "{nbgrader_step}/{assignment_id}/{student_id}"\n'
                'c.CourseDirectory.db_url = "sqlite:////srv/grades/week2.db"\n')
    layout = CourseLayout.load(course.root)
    root = course.root.resolve()
    assert layout.submitted("ada", ASSIGNMENT) == root / "handed-in" / ASSIGNMENT / "ada"
    assert layout.autograded("ada", ASSIGNMENT) == root / "autograded" / ASSIGNMENT / "ada"
    for student in ("ada", "bo"):
        layout.submitted(student, ASSIGNMENT).mkdir(parents=True)
    (root / "handed-in" / "week3" / "cy").mkdir(parents=True)
    assert layout.students(ASSIGNMENT) == ["ada", "bo"]
    assert layout.db_url == "sqlite:////srv/grades/week2.db"  # absolute already: as it is


def test_students_are_those_with_a_submission_folder(course):
    layout = CourseLayout.load(course.root)
    assert layout.students(ASSIGNMENT) == []
    for student in ("zoe", "ada"):
        layout.submitted(student, ASSIGNMENT).mkdir(parents=True)
    (layout.submitted("ada", "week3")).mkdir(parents=True)
    (layout.submitted("bo", ASSIGNMENT).parent).mkdir(parents=True)  # nothing for week2
    (layout.submitted("not-a-folder", ASSIGNMENT).parent).mkdir(parents=True)
    layout.submitted("not-a-folder", ASSIGNMENT).write_text("")
    assert layout.students(ASSIGNMENT) == ["ada", "zoe"]


def test_db_urls():
    assert absolute_db_url("sqlite:///gradebook.db", "/course") == "sqlite:////course/gradebook.db"
    assert absolute_db_url("sqlite:////abs/g.db", "/course") == "sqlite:////abs/g.db"
    assert absolute_db_url("sqlite://", "/course") == "sqlite://"
    pg = "postgresql://grader:secret@127.0.0.1:5432/gradebook"
    assert absolute_db_url(pg, "/course") == pg


def test_a_folder_without_config_is_not_a_course(tmp_path):
    with pytest.raises(NotACourse, match="no nbgrader_config.py"):
        CourseLayout.load(tmp_path)


def test_the_schedule_writes_the_due_dates_into_the_layouts_gradebook(course, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the course root: the gradebook URL is relative to the root
    course.sync_schedule()
    layout = CourseLayout.load(course.root)
    assert layout.gradebook_path.is_file() and not (tmp_path / "gradebook").exists()
    with layout.gradebook() as gb:
        assert str(gb.find_assignment(ASSIGNMENT).duedate) == "2026-12-04 23:59:00"


def test_no_chdir_left_in_coursekit():
    """The relative gradebook URL used to need os.chdir in the report and the runner."""
    found = subprocess.run(["git", "grep", "-n", "os.chdir", "--", "coursekit"], cwd=REPO_ROOT,
                           capture_output=True, text=True)
    assert found.returncode == 1 and found.stdout == "", found.stdout
