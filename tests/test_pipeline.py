"""coursekit.pipeline: one call in nbgrader_config.py installs every hook of the course, in order.

The course config is loaded as nbgrader loads it (traitlets' PyFileConfigLoader, then nbgrader's
own classes configured from it); the same file without the call is stock nbgrader, loaded in a
fresh process (the intake's monkeypatch and the Validator's tag are process-wide)."""

import json
import os
import subprocess
import sys

import pytest
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from coursekit import pipeline
from coursekit.rendering.bounds import Limits
from coursekit.execution.sandbox import PreflightHook, Settings

from coursekit.core.course import REPO_ROOT

CALL = "pipeline.install(c, sandbox=SANDBOX, limits=RENDER_LIMITS, checker_preamble=CHECKER_PREAMBLE)"

# What nbgrader's own classes hold once configured by a config file: printed as names, so that
# the course's file and a stock copy are read by the same code, each in a fresh process.
PROBE = r"""
import json, sys
from traitlets.config.loader import PyFileConfigLoader
from nbgrader.apps import autogradeapp
from nbgrader.converters import Autograde
from nbgrader.coursedir import CourseDirectory
from nbgrader.validator import Validator

cfg = PyFileConfigLoader("nbgrader_config.py", path=sys.argv[1]).load_config()
converter = Autograde(coursedir=CourseDirectory(config=cfg), config=cfg)
name = lambda x: f"{x.__module__}.{x.__qualname__}" if isinstance(x, type) else type(x).__name__
hooks, hook = [], converter.pre_convert_hook
while hook is not None:
    hooks.append(name(hook))
    hook = getattr(hook, "then", None)
print(json.dumps({
    "converter": name(autogradeapp.Autograde),
    "pre_convert_hook": hooks,
    "sanitize": [name(p) for p in converter.sanitize_preprocessors],
    "autograde": [name(p) for p in converter.autograde_preprocessors],
    "exporter": name(converter.exporter_class),
    "validator": [name(p) for p in Validator(config=cfg).preprocessors],
    "kernel_arguments": list(cfg.Execute.get("extra_arguments", [])),
}))
"""


def configured(folder) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, str(folder)], capture_output=True, text=True, timeout=300,
                          cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def load(folder) -> Config:
    return PyFileConfigLoader("nbgrader_config.py", path=str(folder)).load_config()


def test_the_course_config_installs_every_hook_in_order_and_stock_has_none(tmp_path):
    course = configured(REPO_ROOT)
    assert course["converter"] == "coursekit.submissions.intake.IntakeAutograde"
    # the sandbox's preflight first, then the expected notebooks: no submission is touched without the sandbox
    assert course["pre_convert_hook"] == ["PreflightHook", "ExpectedNotebooks"]
    assert course["sanitize"] == [
        "coursekit.submissions.sanitize.RepairCells", "nbgrader.preprocessors.clearoutput.ClearOutput",
        "nbgrader.preprocessors.deduplicateids.DeduplicateIds",
        "nbgrader.preprocessors.overwritekernelspec.OverwriteKernelspec",
        "nbgrader.preprocessors.overwritecells.OverwriteCells",
        "nbgrader.preprocessors.checkcellmetadata.CheckCellMetadata"]
    assert course["autograde"] == [
        "coursekit.transfer.split_execute.SplitExecute", "nbgrader.preprocessors.ignorepattern.IgnorePattern",
        "nbconvert.preprocessors.clearmetadata.ClearMetadataPreprocessor",
        "nbgrader.preprocessors.limitoutput.LimitOutput", "nbgrader.preprocessors.saveautogrades.SaveAutoGrades",
        "nbgrader.preprocessors.latesubmissions.AssignLatePenalties",
        "nbgrader.preprocessors.checkcellmetadata.CheckCellMetadata"]
    assert course["exporter"] == "coursekit.submissions.sanitize.SubmissionExporter"
    assert course["validator"][-1] == "coursekit.transfer.split_execute.SplitExecute"
    assert course["kernel_arguments"] == sandbox_settings_of(REPO_ROOT).kernel_arguments()
    loaded = load(REPO_ROOT)
    assert loaded.Execute.kernel_name and loaded.AssignLatePenalties.plugin_class == "coursekit.core.late.PercentPerDayLate"

    # the same file without the call: nbgrader's own pipeline, none of the course's hooks
    text = (REPO_ROOT / "nbgrader_config.py").read_text()
    assert text.count(CALL) == 1
    (tmp_path / "nbgrader_config.py").write_text(text.replace(CALL, "pass  # stock nbgrader"))
    stock = configured(tmp_path)
    for key in ("converter", "pre_convert_hook", "sanitize", "autograde", "exporter", "validator", "kernel_arguments"):
        assert stock[key] != course[key], key
    assert stock["converter"] == "nbgrader.converters.autograde.Autograde"
    assert not any(p.startswith("coursekit.") for p in stock["sanitize"] + stock["autograde"] + stock["validator"])


def sandbox_settings_of(folder) -> Settings:
    """The SANDBOX the config file names, read from its own namespace."""
    namespace = {"get_config": Config, "__file__": str(folder / "nbgrader_config.py")}
    exec(compile((folder / "nbgrader_config.py").read_text(), "nbgrader_config.py", "exec"), namespace)
    return namespace["SANDBOX"]


def test_install_twice_or_over_a_set_key_is_refused():
    c = Config()
    pipeline.install(c, sandbox=Settings(), limits=Limits(), checker_preamble="")
    hook = c.Autograde.pre_convert_hook
    assert isinstance(hook, PreflightHook) and type(hook.then).__name__ == "ExpectedNotebooks"
    with pytest.raises(pipeline.AlreadyInstalled, match="Autograde.pre_convert_hook"):
        pipeline.install(c, sandbox=Settings(), limits=Limits(), checker_preamble="")
    assert c.Autograde.pre_convert_hook is hook and hook.then.__class__.__name__ == "ExpectedNotebooks"  # not chained twice

    before = Config()
    before.Execute.extra_arguments = ["--something"]  # silently overwritten, were it allowed
    with pytest.raises(pipeline.AlreadyInstalled, match="Execute.extra_arguments"):
        pipeline.install(before, sandbox=Settings(), limits=Limits(), checker_preamble="")
    with pytest.raises(TypeError):
        pipeline.install(Config(), sandbox=Settings().kernel_arguments(), limits=Limits(), checker_preamble="")


def test_settings_after_the_call_override_it(tmp_path):
    """Course copies in tests (and TAs) append settings after the call: they win, as before."""
    text = (REPO_ROOT / "nbgrader_config.py").read_text()
    (tmp_path / "nbgrader_config.py").write_text(
        text + "\nSANDBOX = Settings(enabled=False)\nc.Execute.extra_arguments = SANDBOX.kernel_arguments()\n")
    assert load(tmp_path).Execute.extra_arguments == Settings(enabled=False).kernel_arguments()


# --- one run: the class listed once, each submission scanned once, the sandbox probed once -----------

SPY = r'''
import os, sys

LOG = os.environ["COURSEKIT_TEST_SPY"]


def note(what):
    with open(LOG, "a") as f:
        f.write(f"{what} {os.getpid()}\n")


from coursekit.submissions import intake as _intake

for _name in ("class_list", "scan"):
    def _spy(*args, _real=getattr(_intake, _name), _name=_name, **kwargs):
        note(_name)
        return _real(*args, **kwargs)
    setattr(_intake, _name, _spy)
'''

# bubblewrap, as every process of the run finds it on PATH: a probe runs 'import encodings' in it
# (the log's path is written in: bubblewrap runs with the sandbox's environment, not the grader's)
BWRAP_SPY = '''#!/bin/sh
case "$*" in *"import encodings"*) echo "probe $$" >> {log};; *) echo "kernel $$" >> {log};; esac
exec {bwrap} "$@"
'''


def test_one_run_lists_the_class_once_scans_each_submission_once_and_probes_the_sandbox_once(
        generated_course, tmp_path):
    """Counted by spies in every process of a real run of 2 submissions (the runner, its nbgrader
    processes, their kernels' sandbox wrappers). Before issue 26 the same run counted class_list 3,
    scan 4, probe 11 (1 for the runner, then per submission 1 in nbgrader and 1 per kernel)."""
    import shlex
    import shutil

    from conftest import course_copy
    from test_runner import make_class, run_runner

    course = course_copy(generated_course, tmp_path / "course")
    make_class(course, {"ann": ({"fashion_mnist": None, "mnist": None}, None),
                        "bob": ({"fashion_mnist": None, "mnist": None}, None)})
    spies = tmp_path / "spies"
    spies.mkdir()
    (spies / "sitecustomize.py").write_text(SPY)
    log = tmp_path / "spy.log"
    bwrap = spies / "bwrap"
    bwrap.write_text(BWRAP_SPY.format(bwrap=shlex.quote(shutil.which("bwrap")), log=shlex.quote(str(log))))
    bwrap.chmod(0o755)
    env = {"COURSEKIT_TEST_SPY": str(log), "PYTHONPATH": str(spies),
           "PATH": f"{spies}:{os.environ['PATH']}"}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        proc = run_runner(course.root, "-j", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "graded 2 of 2" in proc.stdout
    seen = [line.split()[0] for line in log.read_text().splitlines()]
    counts = {what: seen.count(what) for what in ("class_list", "scan", "probe", "kernel")}
    assert counts == {"class_list": 1, "scan": 2, "probe": 1, "kernel": 8}, counts  # 2 notebooks x 2 kernels each


def test_the_one_sweeper_removes_what_dead_processes_left_and_nothing_else(tmp_path):
    """sandbox.sweep_leftovers serves the sandbox's scratch, the transfer folders, nbgrader's intake
    copies and the runner's work folders: a dead process's folder goes (a file system mounted in
    it is unmounted first), a live one's, a link and a stray file stay."""
    from coursekit.execution import sandbox

    dead = subprocess.Popen(["true"])
    dead.wait()
    prefix = "coursekit-test-"
    left = tmp_path / f"{prefix}{dead.pid}-abc"
    (left / "outbox").mkdir(parents=True)
    (left / "file").write_text("x")
    # the grader runs as root (the sandbox needs it): a transfer folder's outbox is a tmpfs like this
    assert sandbox._libc().mount(b"tmpfs", os.fsencode(left / "outbox"), b"tmpfs", 0, b"size=1M") == 0
    (left / "outbox" / "written").write_text("y")
    live = tmp_path / f"{prefix}{os.getpid()}-abc"
    live.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("z")
    link = tmp_path / f"{prefix}{dead.pid}-link"
    link.symlink_to(elsewhere)
    stray = tmp_path / f"{prefix}{dead.pid}-file"
    stray.write_text("not a folder")

    assert sandbox.sweep_leftovers(tmp_path, prefix) == [left]
    assert not left.exists() and live.is_dir() and link.is_symlink() and (elsewhere / "keep").is_file()
    assert stray.is_file()
    assert str(left) not in open("/proc/self/mounts").read()
