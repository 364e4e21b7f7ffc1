"""Every command the README and docs/ show is run by a test.

The commands are read from the pages themselves: every line of a fenced ```bash, ```sh or
```shell block, the ``$ `` lines of a ```console block, any ``$ `` line outside a block, and each
```python block as one snippet. Each one is then EITHER run here (the README's "Grade your own
class, step by step" in order on a scratch copy of the course, exactly as written; the others
where they are cheap) OR found in ``MAPPED``: the existing test that runs it, named by its file
and function, whose code must still contain the given evidence. A command that is neither, or a
table entry whose command left the docs, fails with what to do: a new doc command cannot go
untested, and the table cannot rot.

Blocks in other languages (```yaml: a pod's settings) are data, not commands; a fence without a
language, or an indented code block that starts with a command, fails: say what it is.
"""

from __future__ import annotations

import ast
import csv
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder import ASSIGNMENT
from coursekit.core.course import grading_env

REPO = next(p for p in Path(__file__).resolve().parents if (p / "nbgrader_config.py").is_file())  # tests may move
TESTS = REPO / "tests"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell"}
CONSOLE = {"console"}
SNIPPET = {"python"}
DATA = {"yaml", "json", "text", "csv", "toml", "ini"}  # shown, not run
EXECUTABLES = ("coursekit", "nbgrader", "python", "bin/", ".venv/", "jupyter", "dask", "pip", "cd ", "umask",
               "source ", "mkdir", "cp ", "echo ")
WALKTHROUGH = ("README.md", "Grade your own class, step by step")
FIXTURE_SUBMISSIONS = TESTS / "fixtures" / "submissions"
LMS = TESTS / "fixtures" / "lms"


# --- reading the commands off the pages ------------------------------------------------------


@dataclass(frozen=True)
class DocCommand:
    text: str  # the command as a shell reads it, without its trailing comment
    page: str  # README.md, docs/ta.md
    line: int
    section: str  # the heading above it

    def where(self) -> str:
        return f"{self.page}:{self.line} ({self.section})"


def strip_comment(line: str) -> str:
    """``line`` without a trailing ``# comment`` (a # outside quotes, at the start or after a space)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")


def read_page(path: Path) -> tuple[list[DocCommand], list[str]]:
    """The commands shown on one page, and what is wrong with how the page shows code."""
    name = str(path.relative_to(REPO))
    commands, wrong = [], []
    section, fence, language, pending, snippet = "", None, "", None, None
    lines = path.read_text().splitlines()
    for number, raw in enumerate(lines, 1):
        match = FENCE.match(raw)
        if fence is None and match:
            fence, language = match.group(2), match.group(3).lower()
            if not language:
                wrong.append(f"{name}:{number}: a fenced block without a language: write ```bash for commands "
                             f"(run or mapped by tests/test_docs_commands.py) or ```text for anything else")
            elif language not in SHELL | CONSOLE | SNIPPET | DATA:
                wrong.append(f"{name}:{number}: ```{language}: tests/test_docs_commands.py does not know this language")
            continue
        if fence is not None and raw.strip().startswith(fence) and raw.strip().strip(fence[0]) == "":
            if language in SNIPPET and snippet:
                commands.append(DocCommand("python: " + snippet[0][1], name, snippet[0][0], section))
            fence, language, snippet = None, "", None
            continue
        if fence is None:
            if raw.startswith("#"):
                section = raw.lstrip("#").strip()
            elif raw.startswith("$ "):
                commands.append(DocCommand(raw[2:].strip(), name, number, section))
            elif (raw.startswith("    ") and raw.strip().startswith(EXECUTABLES)
                  and (number == 1 or not lines[number - 2].strip())):
                wrong.append(f"{name}:{number}: an indented code block ({raw.strip()!r}): put commands in a "
                             f"```bash block, so that tests/test_docs_commands.py sees them")
            continue
        text = raw.strip()
        if language in SNIPPET:
            if text and not text.startswith("#"):
                snippet = (snippet or []) + [(number, text)]
            continue
        if language in DATA:
            continue
        if language in CONSOLE:
            if not text.startswith("$ "):
                continue  # output
            text = text[2:]
        text = strip_comment(text)
        if pending is not None:  # a continued line
            start, before = pending
            text, number = before + " " + text.rstrip("\\").strip(), start
        if text.endswith("\\"):
            pending = (number, text.rstrip("\\").strip())
            continue
        pending = None
        if text:
            commands.append(DocCommand(" ".join(text.split()), name, number, section))
    return commands, wrong


def doc_commands() -> list[DocCommand]:
    found = []
    for page in PAGES:
        found += read_page(page)[0]
    return found


# --- commands mapped to the test that runs them -------------------------------------------------


@dataclass(frozen=True)
class Mapped:
    node: str  # "test_file.py::test_name" (found anywhere under tests/), or a repository file
    evidence: str  # text the test's function (or the file) must contain
    evidence_in: str = ""  # a helper file the test uses, to look for the evidence instead
    why: str = ""


MAPPED: dict[str, Mapped] = {
    "bin/test": Mapped(".ci/run", "bin/test", why="CI runs exactly bin/test"),
    "bin/setup": Mapped("bin/test", '"$ROOT/bin/setup"', why="bin/test (CI) runs bin/setup first"),
    "nbgrader validate source/week2/*.ipynb": Mapped(
        "test_notebooks.py::test_source_notebooks_pass_nbgrader_validate", "REPO.source(ASSIGNMENT)"),
    "nbgrader validate --invert release/week2/*.ipynb": Mapped(
        "test_notebooks.py::test_release_fails_every_check_under_validate_invert", '"--invert"'),
    "jupyter lab --ServerApp.ip=127.0.0.1 --no-browser --allow-root": Mapped(
        "test_formgrader_default.py::test_jupyter_started_without_config_serves_the_course_formgrader",
        '"lab"', why="a real `jupyter lab` without --config, as a TA starts it, in headless Chromium"),
    "jupyter lab --ServerApp.ip=127.0.0.1 --no-browser": Mapped(
        "test_formgrader_default.py::test_jupyter_started_without_config_serves_the_course_formgrader", '"lab"'),
    "coursekit feedback --release": Mapped(
        "test_cli.py::test_feedback_and_release", '"--release"',
        why="needs nbgrader's exchange: the test makes one and releases through it"),
    "coursekit grade --force": Mapped(
        "test_runner.py::test_regrading_keeps_the_tas_marks", '"--force"',
        why="regrades: the runner's test of --force, with a TA's marks kept"),
    "coursekit grade --scheduler tls://HOST:8786": Mapped(
        "test_cluster.py::test_cluster_gradebook_equals_local_runner_field_by_field", '"--scheduler"',
        evidence_in="test_cluster.py", why="a real TLS Dask cluster on 127.0.0.1"),
    "dask scheduler --protocol tls --host HOST --port 8786 $(python -m coursekit.grading.cluster tls-args scheduler)": Mapped(
        "test_cluster.py::test_the_cluster_is_the_course_set_up_mutual_tls", 'self.tls_args("scheduler")',
        evidence_in="daskcluster.py", why="tests/daskcluster.py starts `dask scheduler` with the same "
                                          "tls_args (test_tls_args_command_is_what_the_cluster_tests_use)"),
    "dask worker tls://HOST:8786 $(python -m coursekit.grading.cluster tls-args worker) --nworkers 16 --nthreads 1": Mapped(
        "test_cluster.py::test_the_cluster_is_the_course_set_up_mutual_tls", 'self.tls_args("worker")',
        evidence_in="daskcluster.py"),
    "python: from coursekit.grading.cluster import slurm_cluster": Mapped(
        "test_cluster_deploy.py::test_workers_and_scheduler_use_the_course_certificates", "slurm_cluster",
        evidence_in="test_cluster_deploy.py", why="the Slurm job script generated and checked (no Slurm in CI)"),
    'python: c.CourseDirectory.db_url = "postgresql+psycopg://USER:PASSWORD@HOST:5432/week2"': Mapped(
        "test_postgres.py::test_the_runner_on_postgresql_gives_the_sqlite_gradebook", "c.CourseDirectory.db_url",
        evidence_in="conftest.py", why="tests/conftest.py's postgres_course writes this line into a course copy"),
    "python: c.SubmitGrading.enabled = True        # off by default: the hub runs no service, as before": Mapped(
        "test_submit_service.py::test_feedback_appears_for_the_student_with_no_staff_action",
        "c.SubmitGrading.enabled = True", evidence_in="test_submit_service.py",
        why="the hub of that module runs with these settings (max_per_hour lowered to see the limit)"),
    ".venv/bin/python tests/fixtures/build_submissions.py": Mapped(
        "test_fixtures_current.py::test_committed_submissions_are_up_to_date", 'build_submissions.main(["--check"])',
        why="builds every submission the same way and compares with the committed ones (writing them would "
            "change the repository)"),
    ".venv/bin/python -m pytest tests/notebooks/test_autograde.py --update-expected-scores": Mapped(
        "test_autograde.py::test_updating_the_table_with_the_scores_it_expects_changes_nothing",
        "update_expected_scores(", why="the option's writer on a copy of the table"),
    'bin/test -m "not slow" tests/notebooks/test_autograde.py tests/submissions/test_broken_submissions.py '
    'tests/notebooks/test_adversarial_submissions.py': Mapped(
        ".ci/run", "bin/test", why="CI runs bin/test, these files included (their paths: "
                                   "test_paths_in_commands_exist)"),
    "bin/hub": Mapped(
        "test_hub.py::test_student_sees_score_ta_comment_and_no_hidden_test", '"coursekit.hosting.hub"',
        evidence_in="hub_session.py", why="bin/hub's program (python -m coursekit.hosting.hub after bin/setup) on a free port"),
    "bin/hub --remove-accounts": Mapped(
        "test_hub.py::test_student_sees_score_ta_comment_and_no_hidden_test", "remove_accounts",
        evidence_in="hub_session.py", why="the hub session removes its accounts when the test ends"),
}

# Commands run by a test of this file, other than the README's walk-through (which runs every
# command of its section that is not in MAPPED).
RUN_HERE: dict[str, str] = {
    "bin/demo": "test_bin_demo_runs_the_main_job",
    "bin/hub --help": "test_bin_hub_help_only_prints",
    "bin/postgres start": "test_bin_postgres_start_url_stop",
    "bin/postgres url": "test_bin_postgres_start_url_stop",
    "bin/postgres stop": "test_bin_postgres_start_url_stop",
    "coursekit --help": "test_ta_commands_on_a_copy_of_the_walked_class",
    "coursekit grade --student alice": "test_ta_commands_on_a_copy_of_the_walked_class",
    "nbgrader autograde week2": "test_ta_commands_on_a_copy_of_the_walked_class",
    'coursekit extend alice --until "2026-12-08 23:59 UTC"': "test_ta_commands_on_a_copy_of_the_walked_class",
    "coursekit extend --list": "test_ta_commands_on_a_copy_of_the_walked_class",
    "coursekit extend alice --remove": "test_ta_commands_on_a_copy_of_the_walked_class",
    "coursekit export --lms moodle --moodle-id email --out moodle.csv":
        "test_ta_commands_on_a_copy_of_the_walked_class",
    "nbgrader export --to grades.csv": "test_ta_commands_on_a_copy_of_the_walked_class",
    "coursekit grade -j 4": "test_operations_runner_commands_on_the_walked_class",
    "coursekit grade --student alice --student bob": "test_operations_runner_commands_on_the_walked_class",
    "umask 007 && coursekit grade": "test_operations_runner_commands_on_the_walked_class",
    'pip install "coursekit_student-0.1.0-py3-none-any.whl[tensorflow]"': "test_student_install_commands",
    "pip install coursekit_student-0.1.0-py3-none-any.whl": "test_student_install_commands",
}


def walkthrough_commands() -> list[DocCommand]:
    page, section = WALKTHROUGH
    return [c for c in doc_commands() if c.page == page and c.section == section]


def find_test_file(name: str) -> Path | None:
    """A test file by its name, wherever it is under tests/ (tests may move into subfolders)."""
    found = sorted(TESTS.rglob(name))
    return found[0] if found else None


def node_source(node: str) -> str:
    """The source of ``node``'s function ("file.py::name", or "file.py::Class::name"), or of a
    repository file; AssertionError when it does not exist."""
    if "::" not in node:
        path = REPO / node
        assert path.is_file(), f"{node} does not exist"
        return path.read_text()
    file, *names = node.split("::")
    path = find_test_file(file)
    assert path is not None, f"no {file} under tests/"
    text = path.read_text()
    body = ast.parse(text).body
    for name in names:
        name = name.split("[")[0]
        found = [n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                 and n.name == name]
        assert found, f"{node}: no {name} in {path.relative_to(REPO)}"
        node_ast, body = found[0], getattr(found[0], "body", [])
    first = min([d.lineno for d in getattr(node_ast, "decorator_list", [])] + [node_ast.lineno])
    return "\n".join(text.splitlines()[first - 1:node_ast.end_lineno])  # with its decorators (parameters)


# --- the table's own tests (cheap) -------------------------------------------------------------------


def test_pages_show_code_as_this_test_reads_it():
    wrong = []
    for page in PAGES:
        wrong += read_page(page)[1]
    assert not wrong, "\n".join(wrong)


def test_the_reader_finds_commands_as_a_shell_reads_them():
    assert strip_comment('coursekit extend alice --reason "a # in quotes"  # why') == \
        'coursekit extend alice --reason "a # in quotes"'
    walk = [c.text for c in walkthrough_commands()]
    assert walk[:2] == ["source bin/_env", "nbgrader generate_assignment week2 --force"], walk
    assert "coursekit export --lms canvas --roster canvas.csv" in walk
    assert len(doc_commands()) >= len(walk) + len(MAPPED), "the reader lost commands"


def test_every_doc_command_is_run_or_mapped_to_a_test():
    walk = {c.text for c in walkthrough_commands()}
    untested = [c for c in doc_commands() if c.text not in walk | MAPPED.keys() | RUN_HERE.keys()]
    assert not untested, (
        "commands shown in the docs that no test runs:\n" +
        "\n".join(f"  {c.where()}: {c.text}" for c in untested) +
        "\nRun each in tests/test_docs_commands.py (RUN_HERE), or add it to MAPPED with the test that "
        "runs it; a command CI cannot run (a real Canvas, Slurm) must not be shown as a command.")


def test_every_table_entry_is_still_in_the_docs():
    shown = {c.text for c in doc_commands()}
    stale = sorted((MAPPED.keys() | RUN_HERE.keys()) - shown)
    assert not stale, f"no longer shown in the docs, remove from the table: {stale}"
    names = {n.name for n in ast.parse(Path(__file__).read_text()).body if isinstance(n, ast.FunctionDef)}
    assert set(RUN_HERE.values()) <= names, set(RUN_HERE.values()) - names


@pytest.mark.parametrize("command", sorted(MAPPED))
def test_mapped_command_names_a_test_that_runs_it(command):
    mapped = MAPPED[command]
    source = node_source(mapped.node)  # fails when the node is gone
    if mapped.evidence_in:
        helper = find_test_file(mapped.evidence_in)
        assert helper is not None, f"{command}: no {mapped.evidence_in} under tests/"
        source = helper.read_text()
    assert mapped.evidence in source, f"{command}: {mapped.node} no longer contains {mapped.evidence!r}"


PATH_PREFIXES = ("bin/", "tests/", "source/", "release/", ".venv/", "benchmarks/", "calibration/", "coursekit/")


def test_paths_in_commands_exist():
    """A file a command names (a script, a test file, the notebooks) is there: a moved test file or
    a renamed script makes its command fail here, even where the command is mapped, not run."""
    missing = []
    for command in doc_commands():
        for word in shlex.split(command.text.removeprefix("python: "), comments=True):
            if word.startswith(PATH_PREFIXES) and not list(REPO.glob(word.split("[")[0])):
                missing.append(f"{command.where()}: {word}")
    assert not missing, "paths in doc commands that do not exist:\n" + "\n".join(missing)


def test_a_new_doc_command_fails_the_check(tmp_path, monkeypatch):
    """The check can fail: a page with one new command, neither run nor mapped."""
    page = tmp_path / "new.md"
    page.write_text("# A new page\n\n```bash\ncoursekit grade --everything-twice\n```\n\n$ nbgrader frobnicate\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PAGES", [page])
    with pytest.raises(AssertionError, match=r"new.md:4 \(A new page\): coursekit grade --everything-twice"):
        test_every_doc_command_is_run_or_mapped_to_a_test()
    with pytest.raises(AssertionError, match="nbgrader frobnicate"):
        test_every_doc_command_is_run_or_mapped_to_a_test()
    page.write_text("# Old\n\n```\ncoursekit grade\n```\n\n    coursekit status\n")
    with pytest.raises(AssertionError, match="without a language"):
        test_pages_show_code_as_this_test_reads_it()
    with pytest.raises(AssertionError, match="indented code block"):
        test_pages_show_code_as_this_test_reads_it()


# --- the README's "Grade your own class, step by step", run as written --------------------------


def path_without_the_environment() -> str:
    """PATH without this environment's bin folder: `source bin/_env` has to put it there."""
    venv_bins = {str(REPO / ".venv" / "bin"), os.path.dirname(sys.executable)}
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p not in venv_bins)


def run_in_one_shell(commands: list[DocCommand], cwd: Path, env: dict, log: Path) -> dict[str, tuple[int, str]]:
    """Run ``commands`` one after the other in one bash, as someone types them (a mapped command
    is left to its test): command -> (exit status, what it printed on stdout)."""
    script = ["set -u", "exec 2>&1"]  # what a command says on stderr is part of its output
    for i, command in enumerate(commands):
        if command.text in MAPPED:
            script.append(f"printf '\\n@@ {i} 0\\n'  # mapped: {MAPPED[command.text].node}")
            continue
        script.append(f"printf '\\n@@ {i} start\\n'")
        script.append(command.text)
        script.append(f"printf '\\n@@ {i} %d\\n' $?")
    proc = subprocess.run(["bash", "-c", "\n".join(script)], cwd=cwd, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=3600)
    log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    outputs, text = {}, []
    for line in proc.stdout.splitlines():
        marker = re.fullmatch(r"@@ (\d+) (start|\d+)", line)
        if not marker:
            text.append(line)
        elif marker.group(2) == "start":
            text = []
        else:
            outputs[commands[int(marker.group(1))].text] = (int(marker.group(2)), "\n".join(text))
    missing = [c.text for c in commands if c.text not in outputs]
    assert not missing, f"stopped before {missing}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return outputs


@dataclass
class Walk:
    course: Path
    home: Path
    outputs: dict[str, tuple[int, str]]  # command -> (exit status, what it printed)


@pytest.fixture(scope="module")
def walked(tmp_path_factory) -> Walk:
    """A scratch copy of the course set up as a TA's grading machine (bin/ and .venv/ of this
    repository, two students' notebooks in ~/Downloads, Canvas's gradebook file as canvas.csv),
    where the README's section runs, command by command, in one bash as a TA types it."""
    from coursekit.core.course import Course

    base = tmp_path_factory.mktemp("walk")
    course = Course.copy_of(base / "course").root
    (course / "bin").symlink_to(REPO / "bin")
    (course / ".venv").symlink_to(REPO / ".venv")
    home = base / "home"
    for student, fixture in (("alice", "all-but-training"), ("bob", "untouched-release")):
        folder = home / "Downloads" / ASSIGNMENT / student
        folder.mkdir(parents=True)
        for notebook in (FIXTURE_SUBMISSIONS / fixture / ASSIGNMENT).glob("*.ipynb"):
            shutil.copy(notebook, folder)
    with open(LMS / "canvas_gradebook.csv", newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    rows = rows[:2] + [["Doe, Alice", "6001", "S101", "alice", "Section A"] + [""] * (len(rows[0]) - 5),
                       ["Roe, Bob", "6002", "S102", "bob", "Section A"] + [""] * (len(rows[0]) - 5)]
    with open(course / "canvas.csv", "w", newline="", encoding="utf-8-sig") as f:
        csv.writer(f).writerows(rows)

    env = dict(os.environ, HOME=str(home), PATH=path_without_the_environment(), TF_CPP_MIN_LOG_LEVEL="3")
    outputs = run_in_one_shell(walkthrough_commands(), course, env, base / "walk.log")
    return Walk(course, home, outputs)


# Written answers wait for a TA (marking in formgrader is mapped, not run): status says so, and
# export exports them at 0 and says so. Every other command: 0.
EXIT_STATUS = {"coursekit status": 1, "coursekit export --lms canvas --roster canvas.csv": 1,
               "coursekit export --lms moodle --moodle-id email --out moodle.csv": 1}


def status_columns(output: str) -> dict[str, dict[str, str]]:
    """`coursekit status`'s table: student -> column -> text (columns are cut at the header's words)."""
    lines = output.splitlines()
    header = next(i for i, l in enumerate(lines) if l.startswith("student "))
    words = list(re.finditer(r"\S+", lines[header]))
    names, starts = [w.group() for w in words], [w.start() for w in words]
    table = {}
    for line in lines[header + 2:]:
        if line.strip():
            cells = [line[s:e].strip() for s, e in zip(starts, starts[1:] + [None])]
            table[cells[0]] = dict(zip(names, cells))
    return table


@pytest.mark.slow
def test_readme_walkthrough_runs_as_written(walked):
    failed = {c: out for c, (rc, out) in walked.outputs.items() if rc != EXIT_STATUS.get(c, 0)}
    assert not failed, f"README commands that failed (log: {walked.course.parent / 'walk.log'}):\n" + \
        "\n".join(f"  {c}: exit {walked.outputs[c][0]}\n{out[-2000:]}" for c, out in failed.items())
    course = walked.course
    for student in ("alice", "bob"):
        assert sorted(p.name for p in (course / "autograded" / student / ASSIGNMENT).glob("*.ipynb")) == \
            ["fashion_mnist.ipynb", "mnist.ipynb"], student
        assert (course / "feedback" / student / ASSIGNMENT / "fashion_mnist.html").is_file(), student
    for page in ("report.html", "report.csv", "similarity.html"):
        assert (course / "reports" / ASSIGNMENT / page).is_file(), page
    # status (step 3) said alice was late, from her timestamp.txt; the extension (step 6) then
    # took her penalty back without grading again
    before = status_columns(walked.outputs["coursekit status"][1])
    assert before["alice"]["late"].startswith("yes") and before["bob"]["late"] == "", before
    after = subprocess.run(["coursekit", "status"], cwd=course, env=grading_env(), capture_output=True, text=True)
    alice = status_columns(after.stdout)["alice"]
    assert alice["late"] == "" and alice["due"].startswith("2026-12-06 23:59"), after.stdout
    # export (step 8) filled week2's column of canvas.csv for both students
    with open(course / "canvas.csv", newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    assert "written answers still waiting for a TA" in walked.outputs["coursekit export --lms canvas --roster canvas.csv"][1]
    assert rows[0][-1] == ASSIGNMENT, rows[0]
    scores = {r[3]: r[-1] for r in rows[2:]}
    assert float(scores["alice"]) > 0 and float(scores["bob"]) == 0, scores


@pytest.mark.slow
def test_operations_runner_commands_on_the_walked_class(walked):
    """docs/operations.md's runner commands on the walked class: all graded, so each only checks
    and skips (the regrading one, --force, is mapped to the runner's test)."""
    before = (walked.course / "gradebook" / "gradebook.db").read_bytes()
    for command in ("coursekit grade -j 4", "coursekit grade --student alice --student bob",
                    "umask 007 && coursekit grade"):
        proc = subprocess.run(["bash", "-c", command], cwd=walked.course, env=grading_env(), capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0 and "2 already graded" in proc.stderr, (command, proc.stdout, proc.stderr[-3000:])
    assert (walked.course / "gradebook" / "gradebook.db").read_bytes() == before


@pytest.mark.slow
def test_ta_commands_on_a_copy_of_the_walked_class(walked, tmp_path):
    """docs/ta.md's commands of a week that the walk-through did not run, in their order, on a copy
    of the walked class (the students' emails in the gradebook, as `nbgrader db student import`
    puts them, for Moodle)."""
    from coursekit.core.layout import CourseLayout

    course = tmp_path / "course"
    shutil.copytree(walked.course, course, symlinks=True)
    with CourseLayout.load(course).gradebook() as gb:
        for student in ("alice", "bob"):
            gb.update_or_create_student(student, email=f"{student}@example.edu")
    commands = [c for c in doc_commands() if c.page == "docs/ta.md" and c.text not in walked.outputs]
    outputs = run_in_one_shell(commands, course, grading_env(), tmp_path / "ta.log")
    failed = {c: out for c, (rc, out) in outputs.items() if rc != EXIT_STATUS.get(c, 0)}
    assert not failed, f"docs/ta.md commands that failed (log: {tmp_path / 'ta.log'}):\n" + \
        "\n".join(f"  {c}: exit {outputs[c][0]}\n{out[-2000:]}" for c, out in failed.items())
    assert "alice" in outputs["coursekit extend --list"][1] and "2026-12-08 23:59" in outputs["coursekit extend --list"][1]
    with open(course / "moodle.csv", newline="", encoding="utf-8") as f:
        moodle = dict(list(csv.reader(f))[1:])
    assert float(moodle["alice@example.edu"]) > 0, moodle
    with open(course / "grades.csv", newline="") as f:
        assert {r["student_id"] for r in csv.DictReader(f)} >= {"alice", "bob"}
    with CourseLayout.load(course).gradebook() as gb:  # --remove took alice's extension back: late again
        assert gb.find_submission(ASSIGNMENT, "alice").late_submission_penalty > 0


# --- other commands, where they are cheap ------------------------------------------------------------


def test_student_install_commands(tmp_path):
    """docs/student.md's two pip commands on the wheel bin/setup builds, with --dry-run --no-index
    (nothing is installed or downloaded): the plain one would install the package with what this
    environment has; the [tensorflow] one asks pip for TensorFlow, which a student's machine
    downloads and this offline machine cannot (it has tensorflow-cpu)."""
    proc = subprocess.run([sys.executable, "-m", "coursekit.hosting.student_wheel", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=grading_env())
    assert proc.returncode == 0, proc.stderr
    results = {}
    for command in (c for c in RUN_HERE if c.startswith("pip install")):
        argv = shlex.split(command)
        results[command] = subprocess.run([sys.executable, "-m", *argv, "--dry-run", "--no-index"], cwd=tmp_path,
                                          capture_output=True, text=True, env=grading_env(), timeout=300)
    plain = results["pip install coursekit_student-0.1.0-py3-none-any.whl"]
    assert plain.returncode == 0 and "Would install coursekit-student-0.1.0" in plain.stdout, plain.stderr
    extra = results['pip install "coursekit_student-0.1.0-py3-none-any.whl[tensorflow]"']
    assert 'tensorflow>=2.16; extra == "tensorflow"' in extra.stderr, extra.stderr[-2000:]


def test_tls_args_command_is_what_the_cluster_tests_use():
    """The `$(python -m coursekit.grading.cluster tls-args ROLE)` of docs/operations.md's dask commands
    prints the options tests/daskcluster.py starts `dask scheduler` and `dask worker` with."""
    from coursekit.grading import cluster

    certificates = cluster.ensure_certificates()
    for role in ("scheduler", "worker"):
        proc = subprocess.run([sys.executable, "-m", "coursekit.grading.cluster", "tls-args", role], capture_output=True,
                              text=True, env=grading_env(), cwd=REPO)
        assert proc.returncode == 0, proc.stderr
        assert shlex.split(proc.stdout) == cluster.tls_args(role, certificates) and "--tls-key" in proc.stdout


def test_source_bin_env_puts_the_commands_on_the_path():
    env = dict(os.environ, PATH=path_without_the_environment())
    proc = subprocess.run(["bash", "-c", "source bin/_env && command -v coursekit nbgrader jupyter dask"],
                          cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.split() == [str(REPO / ".venv" / "bin" / n) for n in
                                                          ("coursekit", "nbgrader", "jupyter", "dask")], proc


@pytest.mark.slow
def test_bin_hub_help_only_prints():
    """`bin/hub --help` (it runs bin/setup first, quick when nothing changed) prints its options
    and starts nothing."""
    proc = subprocess.run([str(REPO / "bin" / "hub"), "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=1800, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 and "--remove-accounts" in proc.stdout and "--students" in proc.stdout, \
        proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.mark.slow
def test_bin_postgres_start_url_stop():
    """docs/operations.md's bin/postgres commands, each with a scratch folder after it (without
    one they use build/postgres of the repository): a server whose URL a client can use."""
    import sqlalchemy

    import tempfile

    folder = tempfile.mkdtemp(prefix="coursekit-docs-postgres-")  # in /tmp: the postgres account reaches it
    bin_postgres = [c for c in RUN_HERE if c.startswith("bin/postgres ")]
    run = {c: subprocess.run(["bash", "-c", f"{c} {shlex.quote(folder)}"], cwd=REPO, capture_output=True, text=True,
                             timeout=300) for c in bin_postgres[:2]}
    try:
        for command, proc in run.items():
            assert proc.returncode == 0 and proc.stdout.startswith("postgresql"), (command, proc.stderr)
        url = run["bin/postgres start"].stdout.strip()
        assert run["bin/postgres url"].stdout.strip() == url
        engine = sqlalchemy.create_engine(url)
        with engine.connect() as db:
            assert db.execute(sqlalchemy.text("select 1")).scalar() == 1
        engine.dispose()
    finally:
        stop = subprocess.run(["bash", "-c", f"bin/postgres stop {shlex.quote(folder)}"], cwd=REPO,
                              capture_output=True, text=True, timeout=300)
    assert stop.returncode == 0, stop.stderr
    with pytest.raises(sqlalchemy.exc.OperationalError):
        with sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5}).connect():
            pass
    subprocess.run(["bash", "-c", f"bin/postgres remove {shlex.quote(folder)}"], cwd=REPO, capture_output=True)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_bin_demo_runs_the_main_job():
    """`bin/demo`: set-up, then in build/demo-course/ generate, grade the sample class (two
    submissions train), feedback, export, report and the per-student table."""
    proc = subprocess.run([str(REPO / "bin" / "demo")], cwd=REPO, capture_output=True, text=True, timeout=3600,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    demo = REPO / "build" / "demo-course"
    assert (demo / "reports" / ASSIGNMENT / "report.html").is_file() and (demo / "grades.csv").is_file()
    assert (demo / "feedback" / "perfect" / ASSIGNMENT / "fashion_mnist.html").is_file()
    assert re.search(r"^perfect\s", proc.stdout, re.M), proc.stdout[-3000:]
