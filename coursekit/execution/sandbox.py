"""Run a grading kernel inside a bubblewrap sandbox.

The grader kernel (coursekit/execution/kernel.py) starts as ``python -I -m coursekit.execution.sandbox -- <kernel
command>``. This wrapper runs as the grader, outside the sandbox, and:

1. copies the kernel's working directory (``autograded/<student>/<assignment>/`` during
   autograde) to a private scratch folder, *without* notebooks: while the kernel runs, nbgrader
   keeps there the autograded copies of the notebooks, hidden tests included;
2. starts ``bwrap`` with its own network, PID, IPC and UTS namespaces and a file system that
   holds only: the system (``/usr``, ``/etc``; read-only), the Python environment, the
   ``coursekit`` package, the data sets and their decoded cache (read-only), and the scratch
   copy (read-write) mounted where the working directory was, plus a private ``/tmp`` and
   home. The course (``source/``, ``gradebook/``, ``submitted/``, other students'
   ``autograded/`` and ``feedback/``, ``release/``) and the grader's home are not there at all;
3. drops to a user id of its own (``UID_BASE`` + the wrapper's PID, no capabilities, no new
   privileges), under resource limits: address space and file size per process, number of
   processes (threads count too), total resident memory of the sandbox (watched here) and
   wall time of the whole kernel;
4. relays the five Jupyter channels between the client (TCP or Unix sockets, whatever the
   connection file says) and the kernel, which listens on Unix sockets inside the sandbox
   (it has no network, so nothing outside could reach its TCP ports). This process is outside
   every limit of the sandbox, so what it holds of a message is bounded as the bytes arrive
   (``relay_messages``): past the output limit a message is cut, never held;
5. stops the kernel at its wall-time or memory limit, says so on stderr and notes the stop,
   with its reason, in the file named by ``$COURSEKIT_SANDBOX_EVENTS`` (the class runner's) and
   in each file named by ``--coursekit-sandbox-events=`` (coursekit/transfer/split_execute.py's, which
   records the stop with its cell under any way of running ``nbgrader autograde``), and
   removes the scratch.

If the sandbox cannot start, the wrapper refuses to start the kernel and says why. Options
come from ``nbgrader_config.py`` (the "Sandbox" section) through ``c.Execute.extra_arguments``,
which nbgrader appends to the kernel's command line: see ``Settings``; ``PreflightHook`` makes
``nbgrader autograde`` refuse to start when the sandbox cannot. ``Settings(enabled=False)``
is the explicit opt-out: the kernel then runs as the grader, as stock nbgrader does.

Only the standard library is imported here: this runs once per notebook graded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import hmac
import json
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from coursekit.student import datapaths

PACKAGE_DIR = Path(__file__).resolve().parent.parent
# Each sandbox runs under a user id of its own, so that its process limit (RLIMIT_NPROC counts
# every task of a user) is its own: UID_BASE + the PID of its wrapper, unique while it lives.
UID_BASE = 2_000_000_000
OPTION = "--coursekit-sandbox"
# A folder shared with the grader, mounted at its own path: --coursekit-sandbox-bind-rw=/path
# (made the sandbox user's) or -bind-ro= (coursekit/transfer/split_execute.py: the transfer folders).
BIND_OPTION = OPTION + "-bind-"
# --coursekit-sandbox-events=/path: a file of the grader's where the wrapper also notes its stops
# (coursekit/transfer/split_execute.py: the stops are recorded with their cell from there, never from output).
EVENTS_OPTION = OPTION + "-events="
EVENTS_ENV = "COURSEKIT_SANDBOX_EVENTS"
# Set by a process whose sandbox probe succeeded, for the processes it starts (``probed_environment``):
# the key of what was probed; a child whose own key is the same skips its probe (``check``).
PROBED_ENV = "COURSEKIT_SANDBOX_PROBED"
INNER_HOME = "/home/student"
INNER_RUN = "/run/jupyter"  # the kernel's connection file and Unix sockets, inside
CHANNELS = ("shell", "iopub", "stdin", "control", "hb")
# Never copied into the scratch folder: notebooks (the autograded copies hold hidden tests),
# grader records, databases.
SCRATCH_EXCLUDE = ("*.ipynb", ".ipynb_checkpoints", "grading-problems.json*", "*.db", "*.sqlite*",
                   "__pycache__")
SCRATCH_MAX_BYTES = 512 * 2**20
SCRATCH_MAX_FILES = 5000
# Environment variables the kernel keeps, by exact name (never by prefix: a TF_VAR_token of
# Terraform or an NBGRADER_SECRET must not reach student code). The rest stays outside.
ENV_ALLOW = frozenset({
    "LANG", "LC_ALL", "LC_CTYPE", "TZ",
    "PYTHONHASHSEED", "PYTHONNOUSERSITE", "MPLBACKEND", "MALLOC_ARENA_MAX",
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",      # the runner's threads per worker
    "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS",                   # coursekit/execution/kernel.py's KERNEL_ENV
    "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",                # coursekit/execution/kernel.py's KERNEL_ENV
    datapaths.DATA_DIR_ENV, datapaths.CACHE_DIR_ENV,                   # where the data sets are
    "NBGRADER_EXECUTION", "NBGRADER_VALIDATING",                       # nbgrader tells notebooks it grades
    # Benchmarks turn the training speed-up and the checker's memo off (coursekit/execution/fastfit.py,
    # checks.py); without these the sandboxed kernel never saw the switch.
    "COURSEKIT_FASTFIT", "COURSEKIT_CHECK_CACHE",
    # The fit memo's off switch, and a trusted build's staging folder (coursekit/execution/fitmemo.py).
    "COURSEKIT_FITMEMO", "COURSEKIT_FITMEMO_RECORD",
})
WATCH_INTERVAL = 0.5  # seconds between two looks at the sandbox's memory
SCRATCH_PREFIX = "coursekit-sandbox-"  # <tmp>/coursekit-sandbox-<wrapper pid>-<random>: one wrapper's scratch
# The kernel's output, counted in the relay before nbgrader buffers it (see OutputBudget).
OUTPUT_NOTICE_MARK = "coursekit sandbox: this notebook printed more than its output budget"
# What the relay holds of one message is bounded, whatever the kernel sends: its bytes as they
# arrive (at most the output budget: a larger message is read past and cut), and its parts
# (Jupyter messages have ~7 plus their buffers; each held part costs a Python object too).
MESSAGE_PARTS = 1024
PART_COST = 64            # bytes a held part costs beyond its data (the bytes object, its list slot)
HEAD_BYTES = 256          # kept of each part of a message cut short: enough to see which stream it was
HEAD_PARTS = 16           # parts of a message cut short whose heads are kept (idents, header, content)
COMMAND_LIMIT = 2**20     # ZMTP commands (handshake, subscriptions) are tiny


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot start here; the message says why and what to do."""


# --- settings, from nbgrader_config.py to the kernel's command line ------------------------------


def parse_size(text: str | int) -> int:
    """'8G', '512M', '1.5G' or a number of bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ValueError(f"not a size: {text!r} (write e.g. '8G', '512M')")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


@dataclass(frozen=True)
class Settings:
    """What nbgrader_config.py chooses. Limits apply to one kernel, i.e. one notebook."""

    enabled: bool = True          # False: no sandbox, student code runs with the grader's rights
    memory: str = "8G"            # address space of each process, and resident memory of all
    wall_time: float = 1200       # seconds, the whole kernel (nbgrader's per-cell timeout is separate)
    processes: int = field(default_factory=lambda: max(256, 4 * (os.cpu_count() or 1) + 64))
    # processes + threads: TensorFlow alone starts ~2 per core, plus ~10
    file_size: str = "1G"         # largest file it may write
    disk: str = "1G"              # everything it may write, together: work folder, /tmp, home, /dev/shm
    files: int = 10_000           # files and folders it may have there, together (inodes)
    output: str = "32M"           # what it may print (iopub), before nbgrader sees it

    def kernel_arguments(self) -> list[str]:
        """For ``c.Execute.extra_arguments``: nbgrader appends these to the kernel's command."""
        if not self.enabled:
            return [f"{OPTION}=off"]
        return [f"{OPTION}=on", f"{OPTION}-memory={self.memory}", f"{OPTION}-wall-time={self.wall_time:g}",
                f"{OPTION}-processes={self.processes}", f"{OPTION}-file-size={self.file_size}",
                f"{OPTION}-disk={self.disk}", f"{OPTION}-files={self.files}", f"{OPTION}-output={self.output}"]

    @classmethod
    def of_arguments(cls, arguments) -> "Settings | None":
        """The settings in a kernel-argument list (``Execute.extra_arguments``, a kernel command):
        the one place they are read back. None when it has no sandbox option at all."""
        ours = [a for a in arguments if (a == OPTION or a.startswith((OPTION + "=", OPTION + "-")))
                and not a.startswith((BIND_OPTION, EVENTS_OPTION))]
        return cls.from_arguments(ours) if ours else None

    @classmethod
    def from_arguments(cls, args: list[str]) -> "Settings":
        settings = cls()
        fields = {"memory": str, "wall-time": float, "processes": int, "file-size": str, "disk": str, "files": int,
                  "output": str}
        for arg in args:
            name, _, value = arg[len(OPTION):].partition("=")
            if name == "":
                if value not in ("on", "off"):
                    raise ValueError(f"{arg}: expected {OPTION}=on or {OPTION}=off")
                settings = replace(settings, enabled=value == "on")
            elif name.startswith("-") and name[1:] in fields:
                settings = replace(settings, **{name[1:].replace("-", "_"): fields[name[1:]](value)})
            else:
                raise ValueError(f"unknown sandbox option {arg}")
        for size in (settings.memory, settings.file_size, settings.disk, settings.output):
            parse_size(size)  # fail early on a typo
        if settings.files < 100:
            raise ValueError(f"{OPTION}-files={settings.files}: a kernel needs at least 100 files and folders")
        return settings

    def preflight(self) -> None:
        """Raise SystemExit with the refusal if the sandbox is on and cannot start."""
        if not self.enabled:
            _warn_disabled()
            return
        try:
            check(self)
        except SandboxUnavailable as err:
            raise SystemExit(refusal(str(err))) from None
        # The kernels this process starts (nbclient gives them its environment) skip their probe.
        os.environ.update(probed_environment(self))


class PreflightHook:
    """nbgrader ``pre_convert_hook``: before autograde touches a submission, check that the
    sandbox its kernels will get can start; if not, stop the whole command with the reason.

    The settings are read, when called, from ``Execute.extra_arguments`` of the running nbgrader
    application: the same arguments its kernels get. SystemExit is not caught by nbgrader per
    submission (it catches Exception), so no submission is graded without the sandbox. Another
    hook set before this one (``then``) runs afterwards.
    """

    def __init__(self, then=None):
        self.then = then

    def __call__(self, **hook_arguments):
        self.settings().preflight()
        if self.then is not None:
            return self.then(**hook_arguments)

    @staticmethod
    def settings() -> Settings:
        from traitlets.config import Application

        args = []
        if Application.initialized():
            args = list(Application.instance().config.Execute.get("extra_arguments", []) or [])
        return Settings.of_arguments(args) or Settings()


def refusal(reason: str) -> str:
    return (f"coursekit sandbox: cannot start the sandbox for student code: {reason}\n"
            "Grading refused: without the sandbox, a submission can read the hidden tests and "
            "overwrite the gradebook. Fix the cause above (bin/setup installs bubblewrap), or opt "
            "out explicitly in nbgrader_config.py, section 'Sandbox': SANDBOX = Settings(enabled=False).")


_warned = False


def _warn_disabled() -> None:
    global _warned
    if not _warned:
        print("coursekit sandbox: OFF (nbgrader_config.py, section 'Sandbox'): student code runs "
              "with the grader's rights, network and files", file=sys.stderr, flush=True)
        _warned = True


def split_arguments(argv: list[str]) -> tuple[Settings, list[str]]:
    """``[--, kernel command...]`` with sandbox options anywhere -> (settings, kernel command)."""
    args = list(argv)
    if args and args[0] == "--":
        args = args[1:]
    ours = [a for a in args if a == OPTION or a.startswith(OPTION + "=") or a.startswith(OPTION + "-")]
    command = [a for a in args if a not in ours]
    if not command:
        raise ValueError("no kernel command given (usage: python -m coursekit.execution.sandbox -- <kernel command>)")
    return Settings.of_arguments(ours) or Settings(), command


def events_argument(path: str | os.PathLike) -> str:
    """The kernel-command option that makes the wrapper note its stops in ``path`` too."""
    return EVENTS_OPTION + os.fspath(path)


def events_files(argv: list[str]) -> list[str]:
    files = [a[len(EVENTS_OPTION):] for a in argv if a.startswith(EVENTS_OPTION)]
    for path in files:
        if not os.path.isabs(path):
            raise ValueError(f"{EVENTS_OPTION}{path}: expected an absolute path")
    return files


def bind_argument(mode: str, path: str | os.PathLike) -> str:
    """The kernel-command option that mounts ``path`` in the sandbox, at the same path."""
    if mode not in ("ro", "rw"):
        raise ValueError(f"bind mode {mode!r}: expected 'ro' or 'rw'")
    return f"{BIND_OPTION}{mode}={os.fspath(path)}"


def bind_arguments(argv: list[str]) -> list[tuple[str, Path]]:
    """(mode, folder) of each bind option. A folder must be an absolute path to a real folder
    (not a symbolic link) in a folder that only the grader can change; shared read-write, it
    becomes the sandbox user's (another sandbox may already own a folder it reads)."""
    binds = []
    for arg in argv:
        if not arg.startswith(BIND_OPTION):
            continue
        mode, _, path = arg[len(BIND_OPTION):].partition("=")
        if mode not in ("ro", "rw") or not os.path.isabs(path):
            raise ValueError(f"{arg}: expected {BIND_OPTION}ro=/absolute/path or {BIND_OPTION}rw=/absolute/path")
        folder = Path(os.path.normpath(path))
        try:
            st, parent = os.lstat(folder), os.lstat(folder.parent)
        except OSError as err:
            raise ValueError(f"{arg}: {err.strerror}") from None
        if not stat.S_ISDIR(st.st_mode) or parent.st_uid != os.geteuid() or parent.st_mode & 0o022:
            raise ValueError(f"{arg}: not a folder in a folder that only the grader can change")
        binds.append((mode, folder))
    return binds


# --- what the sandbox sees -------------------------------------------------------------------------


def keras_datasets() -> Path:
    """Where tf.keras.datasets looks for its files (coursekit.student.datasets.install_for_keras puts
    Fashion-MNIST there so that the tutorial's own call works offline)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "datasets"


def python_paths(executable: str) -> list[Path]:
    """The Python installation(s) a kernel command needs: this venv, its base, the executable's."""
    paths = {Path(sys.prefix), Path(sys.base_prefix).resolve()}
    exe = Path(executable)
    if exe.is_absolute():
        paths.add(exe.parent.parent)
        paths.add(exe.resolve().parent.parent)
    return sorted(paths)


def _within(path: Path, other: Path) -> bool:
    return path == other or other in path.parents


def _share_dataset_cache(cache: Path) -> None:
    """coursekit.student.datasets writes its decoded cache with mkstemp, i.e. mode 0600; the kernel's
    user must read it (it is public data), else every check would decode the IDX files again."""
    if not cache.is_dir():
        return
    for path in [cache, *cache.rglob("*")]:
        with contextlib.suppress(OSError):
            mode = path.stat().st_mode
            want = mode | (0o755 if path.is_dir() else 0o644)
            if want != mode:
                os.chmod(path, want & 0o7777)


# --- the sandbox ---------------------------------------------------------------------------------


def _require_tools() -> tuple[str, str]:
    if os.geteuid() != 0:
        raise SandboxUnavailable(
            f"it must be started as root (running as uid {os.geteuid()}): each kernel gets a user id "
            "of its own so that its process limit is its own, and only root can switch user ids")
    bwrap, setpriv = shutil.which("bwrap"), shutil.which("setpriv")
    if not bwrap:
        raise SandboxUnavailable("bubblewrap ('bwrap') is not installed (Debian: apt-get install bubblewrap; bin/setup does it)")
    if not setpriv:
        raise SandboxUnavailable("'setpriv' (util-linux) is not installed")
    return bwrap, setpriv


class Sandbox:
    """One kernel in one sandbox: ``prepare()``, then ``run()`` (which cleans up)."""

    def __init__(self, command: list[str], settings: Settings, cwd: str | Path | None,
                 binds: list[tuple[str, Path]] = (), events: list[str] = ()):
        self.binds = list(binds)
        self.events = list(events)  # files where its stops are noted, besides $COURSEKIT_SANDBOX_EVENTS
        self.command = list(command)
        self.settings = settings
        self.cwd = Path(cwd).resolve() if cwd is not None else None  # None: no working directory
        self.uid = UID_BASE + os.getpid()
        self.memory = parse_size(settings.memory)
        self.scratch: Path | None = None
        self.connection: dict | None = None
        self.host_sockets: list[str] = []
        self.stopped: tuple[str, str] | None = None  # (kind, message) when the wrapper stopped it
        self.peak_resident = 0
        self.mounted = False
        self.budget: OutputBudget | None = None
        self.proc = None  # the bwrap process, once started (a client may connect before)

    # -- set-up --

    def prepare(self, connection_file: str | None = None) -> list[str]:
        """Make the scratch folders; return the bwrap command line.

        Everything the kernel can write (its work folder, home, /tmp, /dev/shm and the folder of
        its sockets) is one tmpfs mounted here, limited to ``disk`` bytes and ``files`` inodes:
        one quota for all of it, and nothing the kernel writes reaches the host's disk."""
        self.bwrap, self.setpriv = _require_tools()
        sweep_leftovers(Path(tempfile.gettempdir()), SCRATCH_PREFIX)
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
        _mount_tmpfs(self.scratch, parse_size(self.settings.disk), self.settings.files)
        self.mounted = True
        for name in ("work", "home", "home/.keras", "tmp", "run", "shm"):
            (self.scratch / name).mkdir(exist_ok=True)
        if self.cwd is not None:
            try:
                self._copy_working_directory()
            except OSError as err:
                raise SandboxUnavailable(f"could not copy the kernel's working directory {self.cwd} into its "
                                         f"{self.settings.disk} scratch space: {err}") from None
        if connection_file is not None:
            self._write_connection_file(connection_file)
        self._write_passwd()
        for name in ("work", "home", "tmp", "run", "shm"):
            _chown_tree(self.scratch / name, self.uid)
        for mode, folder in self.binds:
            if mode == "rw":
                os.chown(folder, self.uid, self.uid, follow_symlinks=False)
        return self.bwrap_command()

    def _copy_working_directory(self) -> None:
        files, size = 0, 0

        def ignore(folder, names):
            nonlocal files, size
            skip = set(shutil.ignore_patterns(*SCRATCH_EXCLUDE)(folder, names))
            for name in names:
                st = os.lstat(os.path.join(folder, name))
                if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                    skip.add(name)  # FIFOs, sockets, devices: never opened
                elif name not in skip and not stat.S_ISDIR(st.st_mode):
                    files += 1
                    size += st.st_size
            if files > SCRATCH_MAX_FILES or size > SCRATCH_MAX_BYTES:
                raise SandboxUnavailable(
                    f"the kernel's working directory {self.cwd} holds more than {SCRATCH_MAX_FILES} files or "
                    f"{SCRATCH_MAX_BYTES >> 20} MB; is it a submission folder? (the sandbox copies it for the kernel)")
            return skip

        shutil.copytree(self.cwd, self.scratch / "work", symlinks=True, ignore=ignore, dirs_exist_ok=True)

    def _write_connection_file(self, connection_file: str) -> None:
        with open(connection_file) as f:
            self.connection = json.load(f)
        self.budget = OutputBudget(parse_size(self.settings.output), self.settings.output,
                                   str(self.connection.get("key", "")).encode(),
                                   str(self.connection.get("signature_scheme", "hmac-sha256")), self._output_cut)
        inner = dict(self.connection, transport="ipc", ip=f"{INNER_RUN}/kernel")
        (self.scratch / "run" / "kernel.json").write_text(json.dumps(inner))

    def _write_passwd(self) -> None:
        # Some libraries look the user up by id; give it a name and the sandbox's home.
        (self.scratch / "passwd").write_text(
            "root:x:0:0:root:/root:/usr/sbin/nologin\n"
            f"student:x:{self.uid}:{self.uid}:student:{INNER_HOME}:/usr/sbin/nologin\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
        (self.scratch / "group").write_text(f"root:x:0:\nstudent:x:{self.uid}:\nnogroup:x:65534:\n")

    def mounts(self) -> list[tuple[str, str, str]]:
        """(kind, host source, sandbox destination); kind: ro, rw, symlink."""
        assert self.scratch is not None
        plan: list[tuple[str, str, str]] = [("ro", "/usr", "/usr")]
        for top in ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"):
            if os.path.islink(top):
                plan.append(("symlink", os.readlink(top), top))
            elif os.path.isdir(top):
                plan.append(("ro", top, top))
        plan.append(("ro", "/etc", "/etc"))
        plan.append(("ro", str(self.scratch / "passwd"), "/etc/passwd"))
        plan.append(("ro", str(self.scratch / "group"), "/etc/group"))
        exposed = [*python_paths(self.command[0]), PACKAGE_DIR, *datapaths.readable()]
        sensitive = [p for p in (self.cwd, Path.home().resolve()) if p is not None]
        for path in exposed:
            path = Path(os.path.abspath(path))
            if not path.exists() or str(path) in ("/", "/usr", "/etc") or Path("/usr") in path.parents:
                continue
            for secret in sensitive:
                if _within(secret, path):
                    raise SandboxUnavailable(f"{path} would be visible to student code, and it contains {secret}")
            plan.append(("ro", str(path), str(path)))
        _share_dataset_cache(datapaths.cache_dir())
        plan.append(("rw", str(self.scratch / "home"), INNER_HOME))
        if keras_datasets().is_dir():
            plan.append(("ro", str(keras_datasets()), f"{INNER_HOME}/.keras/datasets"))
        plan.append(("rw", str(self.scratch / "tmp"), "/tmp"))
        plan.append(("rw", str(self.scratch / "shm"), "/dev/shm"))
        plan.append(("rw", str(self.scratch / "run"), INNER_RUN))
        for mode, folder in self.binds:
            for secret in [p for p in (self.cwd, Path.home().resolve(), PACKAGE_DIR.parent) if p is not None]:
                if _within(secret, folder):
                    raise SandboxUnavailable(f"{folder} would be visible to student code, and it contains {secret}")
            plan.append((mode, str(folder), str(folder)))
        if self.cwd is not None:
            plan.append(("rw", str(self.scratch / "work"), str(self.cwd)))
        # Parents before children (a bind over /tmp must come before one inside it).
        return sorted(plan, key=lambda m: (m[2].count("/"), m[2]))

    def bwrap_command(self) -> list[str]:
        argv = [self.bwrap, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--die-with-parent", "--hostname", "grader-sandbox",
                "--proc", "/proc", "--dev", "/dev"]
        made: set[str] = {"/proc", "/dev"}
        plan = self.mounts()
        readonly = [Path(dest) for kind, _, dest in plan if kind == "ro"]
        for kind, src, dest in plan:
            for parent in reversed(Path(dest).parents):
                p = str(parent)
                if p == "/" or p in made or any(_within(parent, r) for r in readonly):
                    continue
                if not any(p == d for _, _, d in plan):
                    argv += ["--perms", "0755", "--dir", p]
                made.add(p)
            made.add(dest)
            if kind == "symlink":
                argv += ["--symlink", src, dest]
            else:
                argv += ["--ro-bind" if kind == "ro" else "--bind", src, dest]
        argv += ["--chdir", str(self.cwd or "/")]
        argv += [self.setpriv, f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups",
                 "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
        return argv + self.inner_command()

    def inner_command(self) -> list[str]:
        cmd = list(self.command)
        for i, arg in enumerate(cmd):
            if arg == "-f" and i + 1 < len(cmd):
                cmd[i + 1] = f"{INNER_RUN}/kernel.json"
            elif arg.startswith("--f="):
                cmd[i] = f"--f={INNER_RUN}/kernel.json"
        return cmd

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in ENV_ALLOW}
        venv_bin = str(Path(self.command[0]).parent) if os.path.isabs(self.command[0]) else str(Path(sys.executable).parent)
        env.update({
            "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": INNER_HOME, "USER": "student", "LOGNAME": "student", "TMPDIR": "/tmp",
            "KERAS_HOME": f"{INNER_HOME}/.keras", "MPLCONFIGDIR": f"{INNER_HOME}/.config/matplotlib",
        })
        env.setdefault("LANG", "C.UTF-8")
        # The kernel's parent inside the sandbox is bwrap's init (PID 1), which takes it down when
        # this wrapper dies; PID 1 also tells ipykernel not to poll its parent nor print a banner.
        env["JPY_PARENT_PID"] = "1"
        return env

    def limit_child(self) -> None:
        """Runs in the child between fork and exec (as root, before bwrap)."""
        limits = {
            resource.RLIMIT_AS: self.memory,
            resource.RLIMIT_NPROC: self.settings.processes,
            resource.RLIMIT_FSIZE: parse_size(self.settings.file_size),
            resource.RLIMIT_CORE: 0,
        }
        for which, value in limits.items():
            resource.setrlimit(which, (value, value))

    # -- running --

    def run(self, argv: list[str]) -> int:
        try:
            return asyncio.run(self._supervise(argv))
        finally:
            self.cleanup()

    async def _supervise(self, argv: list[str]) -> int:
        loop = asyncio.get_running_loop()
        servers = await self._start_relays() if self.connection else []
        proc = await asyncio.create_subprocess_exec(
            *argv, env=self.environment(), stdin=subprocess.DEVNULL, preexec_fn=self.limit_child)
        self.proc = proc
        # The kernel is interrupted by message (kernelspec interrupt_mode), never by a signal to
        # this process group; a stray SIGINT must not kill the wrapper and with it the kernel.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        loop.add_signal_handler(signal.SIGTERM, self._stop, "terminated", "the grader stopped the kernel")
        deadline = loop.time() + self.settings.wall_time
        waiter = asyncio.ensure_future(proc.wait())
        while not waiter.done():
            await asyncio.wait([waiter], timeout=WATCH_INTERVAL)
            if waiter.done():
                break
            if loop.time() > deadline:
                self._stop("timeout", f"the kernel ran for more than its wall-time limit of "
                                      f"{self.settings.wall_time:g} s and was stopped", reason="wall-time")
            # Its files live in memory too (the scratch tmpfs): they count.
            resident = self.resident_bytes() + self.scratch_bytes()
            self.peak_resident = max(self.peak_resident, resident)
            if resident > self.memory:
                self._stop("sandbox", f"the kernel's processes and files used {resident / 2**30:.1f} GiB of memory, "
                                      f"more than the limit of {self.settings.memory}, and were stopped",
                           reason="memory")
        for server in servers:
            server.close()
        return proc.returncode if self.stopped is None else 128 + signal.SIGKILL

    def scratch_bytes(self) -> int:
        """Bytes the kernel's files take in its scratch tmpfs, and in a folder shared read-write
        that is a tmpfs of its own (coursekit/transfer/split_execute.py's outbox: mount_outbox)."""
        if not self.mounted:
            return 0
        total = _used_bytes(self.scratch)
        for mode, folder in self.binds:
            if mode == "rw" and _is_mount(folder):
                total += _used_bytes(folder)
        return total

    def _output_cut(self, message: str) -> None:
        print(f"coursekit sandbox: {message} (working directory {self.cwd})", file=sys.stderr, flush=True)
        _record_event("sandbox", message, self.cwd, "output", self.events)

    def _stop(self, kind: str, message: str, reason: str | None = None) -> None:
        if self.stopped is None:
            self.stopped = (kind, message)
            if kind != "terminated":  # the grader's own stop, once the notebook has run: nothing to say
                print(f"coursekit sandbox: {message} (working directory {self.cwd})", file=sys.stderr, flush=True)
                _record_event(kind, message, self.cwd, reason, self.events)
        self.kill()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, AttributeError):
            self.proc.kill()  # bwrap: --die-with-parent takes the whole PID namespace with it
        for pid in self.pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def pids(self) -> list[int]:
        """Every process running under this sandbox's user id."""
        found = []
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if entry.stat().st_uid == self.uid:
                        found.append(int(entry.name))
        return found

    def resident_bytes(self) -> int:
        """Memory the sandbox's processes hold. The sum of their resident sizes is cheap but counts
        pages shared after fork() once per process; only when it exceeds the limit is the exact
        figure (proportional set sizes, shared pages split among their users) computed."""
        pids = self.pids()
        page = os.sysconf("SC_PAGE_SIZE")
        total = 0
        for pid in pids:
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(f"/proc/{pid}/statm") as f:
                    total += int(f.read().split()[1]) * page
        if total <= self.memory:
            return total
        total = 0
        for pid in pids:
            with contextlib.suppress(OSError, ValueError):
                with open(f"/proc/{pid}/smaps_rollup") as f:
                    for line in f:
                        if line.startswith("Pss:"):
                            total += int(line.split()[1]) * 1024
                            break
        return total

    async def _start_relays(self) -> list:
        """Listen where the client expects the kernel; forward each connection to the kernel's
        Unix socket inside the sandbox (bytes only: ZMTP is the same over TCP and IPC)."""
        servers = []
        c = self.connection
        for channel in CHANNELS:
            port = int(c[f"{channel}_port"])
            inner = str(self.scratch / "run" / f"kernel-{port}")

            async def handle(reader, writer, inner=inner, channel=channel):
                with contextlib.suppress(asyncio.CancelledError):
                    await self._relay(reader, writer, inner, channel)

            if c.get("transport", "tcp") == "ipc":
                # A relative path is relative to the client, our parent (the kernel's cwd differs).
                path = os.path.join(os.readlink(f"/proc/{os.getppid()}/cwd"), f"{c['ip']}-{port}")
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                servers.append(await asyncio.start_unix_server(handle, path=path))
                self.host_sockets.append(path)
            else:
                host = c.get("ip") or "127.0.0.1"
                servers.append(await asyncio.start_server(handle, host="0.0.0.0" if host == "*" else host, port=port))
        return servers

    async def _relay(self, reader, writer, inner: str, channel: str) -> None:
        try:
            while True:
                try:
                    in_reader, in_writer = await asyncio.open_unix_connection(inner)
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    if self.proc is not None and self.proc.returncode is not None:
                        return
                    await asyncio.sleep(0.02)

            async def pipe(src, dst):
                with contextlib.suppress(ConnectionError, OSError):
                    while data := await src.read(1 << 16):
                        dst.write(data)
                        await dst.drain()

            async def from_kernel(src, dst):
                with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
                    try:
                        await relay_messages(src, dst, channel, self.budget, parse_size(self.settings.output))
                    except MessageTooLarge as err:
                        self._stop("sandbox", f"the kernel sent {err} on its {channel} channel, more than the "
                                              f"grader holds, and was stopped", reason="output")
                    except ProtocolError as err:
                        self._stop("sandbox", f"the kernel broke the Jupyter protocol on its {channel} channel "
                                              f"({err}) and was stopped", reason="protocol")

            tasks = [asyncio.ensure_future(pipe(reader, in_writer)),
                     asyncio.ensure_future(from_kernel(in_reader, writer))]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            in_writer.close()
        finally:
            writer.close()

    def cleanup(self) -> None:
        self.kill()
        for path in self.host_sockets:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if self.scratch is not None:
            if self.mounted:
                _unmount(self.scratch)
                self.mounted = False
            shutil.rmtree(self.scratch, ignore_errors=True)


# --- the scratch file system --------------------------------------------------------------------

_MS_NOSUID, _MS_NODEV, _MNT_DETACH = 2, 4, 2


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _used_bytes(mount: Path) -> int:
    with contextlib.suppress(OSError):
        st = os.statvfs(mount)
        return (st.f_blocks - st.f_bfree) * st.f_frsize
    return 0


def _mount_tmpfs(target: Path, size: int, inodes: int, mode: int = 0o700) -> None:
    options = f"size={size},nr_inodes={inodes},mode={mode:04o}".encode()
    if _libc().mount(b"tmpfs", os.fsencode(target), b"tmpfs", _MS_NOSUID | _MS_NODEV, options) != 0:
        err = ctypes.get_errno()
        raise SandboxUnavailable(f"cannot mount the kernel's size-limited scratch space (tmpfs) at {target}: "
                                 f"{os.strerror(err)}")


def _unmount(target: Path) -> None:
    # Lazily: a process of the sandbox that is still dying may hold it a moment longer.
    _libc().umount2(os.fsencode(target), _MNT_DETACH)


def mount_outbox(folder: Path, settings: Settings) -> None:
    """Make ``folder`` (empty, the grader's) a tmpfs under the sandbox's quotas of disk and files:
    a folder shared read-write with a sandbox is written by student code, and a plain folder
    would be the host's disk, outside every quota. Its bytes also count against the sandbox's
    memory limit (Sandbox.scratch_bytes). Raises SandboxUnavailable if it cannot be mounted."""
    _mount_tmpfs(folder, parse_size(settings.disk), settings.files, mode=0o755)


def unmount_outbox(folder: Path) -> None:
    if _is_mount(folder):
        _unmount(folder)


def _is_mount(path: Path) -> bool:
    with contextlib.suppress(OSError):
        return os.path.ismount(path)
    return False


def scratch_folders(wrapper: int | str = "*") -> list[Path]:
    """The scratch folders of the wrapper process ``wrapper`` (default: of every wrapper)."""
    return sorted(Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}{wrapper}-*"))


def _sweep_scratch() -> None:
    """Remove the scratch folders of wrappers that were killed before they could clean up."""
    sweep_leftovers(Path(tempfile.gettempdir()), SCRATCH_PREFIX)


# --- the grader's own processes and folders: helpers shared by the wrapper, split execution, the
# --- intake and the runner --------------------------------------------------------------------------


def remove_folder(folder: Path) -> None:
    """Remove a folder of the grader's, unmounting first every file system mounted in it (a
    sandbox's scratch, a transfer folder's outbox), deepest first: rmtree does not cross mounts."""
    folder = Path(folder)
    with contextlib.suppress(OSError):
        with open("/proc/self/mounts") as f:
            points = [Path(line.split()[1].encode().decode("unicode_escape")) for line in f]
        for point in sorted((p for p in points if p == folder or folder in p.parents),
                            key=lambda p: len(p.parts), reverse=True):
            _unmount(point)
    shutil.rmtree(folder, ignore_errors=True)


def sweep_leftovers(parent: Path, prefix: str) -> list[Path]:
    """The one sweeper of leftover temporary folders: remove ``<parent>/<prefix><pid>-*`` (a
    sandbox's scratch, a notebook's transfer folder, nbgrader's intake copies, a runner's work
    folder) whose process ``<pid>`` is gone: it was killed before it could clean up. A live
    process's folder, a link and anything not a folder are left alone. Returns what it removed."""
    removed = []
    for folder in Path(parent).glob(f"{prefix}*"):
        pid = folder.name[len(prefix):].split("-")[0]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        with contextlib.suppress(OSError):
            if folder.is_symlink() or not folder.is_dir():
                continue
            remove_folder(folder)
            removed.append(folder)
    return removed


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """In a child process: get ``sig`` when its parent dies (PR_SET_PDEATHSIG), so that nothing the
    grader started goes on unseen after it (the wrapper's sandbox and scratch, an nbgrader run)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG


def killed_with_parent() -> None:
    """``preexec_fn`` for a child that must not outlive its parent even for a moment (SIGKILL)."""
    die_with_parent(signal.SIGKILL)


# --- the kernel's messages, counted before nbgrader sees them -------------------------------------

DELIMITER = b"<IDS|MSG>"


class ProtocolError(Exception):
    """The kernel sent something that is not ZMTP 3 with the NULL mechanism."""


class OutputBudget:
    """How much a kernel may print: the bytes of every message it publishes on iopub, except the
    status messages the protocol needs, counted in the relay before nbgrader buffers anything.

    Past the budget the relay forwards what still fits of the stream message that crossed it,
    then one display message saying that output stops there, and from then on drops output,
    except what a grade depends on: nbgrader scores a check cell 0 when it has an error or
    stderr output, so each cell still gets its first error and its first stderr text, cut
    short. Status messages and the shell channel's replies are untouched, so nbgrader goes on
    grading. Messages the relay makes are signed with the connection's key, as the kernel's own.
    One budget per kernel."""

    EVIDENCE_CHARS = 1000  # of an error's value and traceback lines, or of a stderr text, kept past the budget

    def __init__(self, limit: int, shown: str, key: bytes, scheme: str, on_cut):
        self.limit, self.shown, self.key = limit, shown, key
        self.digest = scheme[len("hmac-"):] if scheme.startswith("hmac-") else "sha256"
        self.spent = 0
        self.cut = False
        self.on_cut = on_cut
        self.kept: set[tuple[str, str]] = set()  # (parent msg_id, "error"/"stderr") kept past the budget

    def notice(self) -> str:
        return f"{OUTPUT_NOTICE_MARK} of {self.shown}: nothing it printed after this point was kept"

    def sign(self, frames: list[bytes]) -> bytes:
        if not self.key:
            return b""
        mac = hmac.new(self.key, digestmod=self.digest)
        for frame in frames:
            mac.update(frame)
        return mac.hexdigest().encode()

    def message(self, idents: list[bytes], header: dict, parent: bytes, content: dict) -> list[bytes]:
        frames = [json.dumps(header).encode(), parent, b"{}", json.dumps(content).encode()]
        return [*idents, DELIMITER, self.sign(frames), *frames]

    @staticmethod
    def header(like: dict, msg_type: str) -> dict:
        return {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": str(like.get("session", "")),
                "username": str(like.get("username", "")), "version": str(like.get("version", "5.3")),
                "date": datetime.now(timezone.utc).isoformat()}

    def filter(self, parts: list[bytes], oversized: bool = False) -> list[list[bytes]]:
        """The messages to forward in place of the message ``parts`` (its frames); ``oversized``:
        a part was too large to hold and is missing."""
        try:
            i = parts.index(DELIMITER)
            header = json.loads(parts[i + 2])
            msg_type = header.get("msg_type") if isinstance(header, dict) else None
        except (ValueError, IndexError, UnicodeDecodeError, RecursionError):
            i, header, msg_type = -1, None, None
        if msg_type == "status" and not oversized:
            return [parts]
        cost = sum(len(p) for p in parts) if not oversized else self.limit + 1
        if not self.cut and self.spent + cost <= self.limit:
            self.spent += cost
            return [parts]
        if header is None or len(parts) < i + 6:
            first = self._cross()
            return []
        idents, parent = parts[:i], parts[i + 3]
        content = {}
        if not oversized:
            with contextlib.suppress(ValueError, UnicodeDecodeError, RecursionError):
                content = json.loads(parts[i + 5])
        elif msg_type == "stream":  # only the start of it was read: which stream?
            name = re.search(rb'"name"\s*:\s*"(stdout|stderr)"', parts[i + 5])
            content = {"name": name.group(1).decode() if name else "stderr"}
        content = content if isinstance(content, dict) else {}
        out = []
        first = self._cross()
        left = self.limit - self.spent
        if first and msg_type == "stream" and not oversized and left > 0 and isinstance(content.get("text"), str):
            out.append(self.message(idents, header, parent, dict(content, text=content["text"][:left])))
            if content.get("name") == "stderr":
                self.kept.add((self._parent_id(parent), "stderr"))
        if first:
            out.append(self.message(idents, self.header(header, "display_data"), parent,
                                    {"data": {"text/plain": self.notice()}, "metadata": {}, "transient": {}}))
        evidence = self._evidence(msg_type, content, oversized, parent)
        if evidence is not None:
            out.append(self.message(idents, self.header(header, msg_type), parent, evidence))
        return out

    def _cross(self) -> bool:
        """Note that the budget is spent; True the first time."""
        if self.cut:
            return False
        self.cut = True
        self.on_cut(f"the kernel printed more than its output budget of {self.shown}; the rest of its output "
                    "was not kept (errors and stderr still count)")
        return True

    @staticmethod
    def _parent_id(parent: bytes) -> str:
        with contextlib.suppress(ValueError, UnicodeDecodeError, RecursionError, AttributeError):
            return str(json.loads(parent).get("msg_id", ""))
        return ""

    def _evidence(self, msg_type, content: dict, oversized: bool, parent: bytes) -> dict | None:
        """A short error or stderr output standing for one past the budget (once per cell)."""
        n = self.EVIDENCE_CHARS
        if msg_type == "error":
            key = (self._parent_id(parent), "error")
            if key in self.kept:
                return None
            self.kept.add(key)
            trace = content.get("traceback") if isinstance(content.get("traceback"), list) else []
            trace = [str(line)[:n] for line in (trace[:5] + trace[-5:] if len(trace) > 10 else trace)]
            return {"ename": str(content.get("ename") or "Error")[:200],
                    "evalue": str(content.get("evalue", "") if not oversized else "(an error too large to keep)")[:n],
                    "traceback": trace}
        if msg_type == "stream" and content.get("name", "stderr") != "stdout":
            # A stream that does not say which it is counts as stderr, the stricter reading.
            key = (self._parent_id(parent), "stderr")
            if key in self.kept:
                return None
            self.kept.add(key)
            text = str(content.get("text", ""))[:n] if not oversized else "(output too large to keep)"
            return {"name": "stderr", "text": text or "(stderr output)"}
        return None


def frame_header(size: int, more: bool) -> bytes:
    flags = 0x01 if more else 0
    if size > 255:
        return bytes([flags | 0x02]) + size.to_bytes(8, "big")
    return bytes([flags, size])


def encode_frames(parts: list[bytes]) -> bytes:
    return b"".join(frame_header(len(part), k < len(parts) - 1) + part for k, part in enumerate(parts))


class MessageTooLarge(ProtocolError):
    """A message over what the relay holds, on a channel where it cannot be cut short."""


async def _skip(src, size: int) -> None:
    while size:
        size -= len(await src.readexactly(min(size, 1 << 20)))


async def relay_messages(src, dst, channel: str, budget: OutputBudget | None, limit: int) -> None:
    """Forward a ZMTP 3 byte stream from the kernel to the client, message by message: the
    greeting and commands as they are, messages through ``budget`` on iopub.

    The relay runs as the grader, outside every limit of the sandbox, so what it holds of a
    message is bounded as the bytes arrive, never after: at most ``limit`` bytes (its parts'
    data plus PART_COST each) and MESSAGE_PARTS parts. On iopub, a message that goes past
    either is cut: the rest of it is read and dropped (only the first HEAD_BYTES of its first
    HEAD_PARTS parts are kept, to say which stream it was) and the budget replaces it by its
    notice, which records the stop. On another channel (nbgrader's replies are small) it is a
    protocol error, which stops the kernel."""
    signature = await src.readexactly(10)
    if signature[0] != 0xFF or signature[9] != 0x7F:
        raise ProtocolError("not a ZMTP 3 greeting")
    dst.write(signature)
    await dst.drain()
    major = await src.readexactly(1)
    if major[0] < 3:
        raise ProtocolError(f"ZMTP version {major[0]}")
    dst.write(major)
    await dst.drain()
    rest = await src.readexactly(53)  # minor version, mechanism (20), as-server, filler
    if rest[1:21].rstrip(b"\0") != b"NULL":
        raise ProtocolError("a security mechanism other than NULL")
    dst.write(rest)
    await dst.drain()
    cuttable = channel == "iopub" and budget is not None
    parts: list[bytes] = []
    held = 0
    oversized = False
    while True:
        (flags,) = await src.readexactly(1)
        if flags & ~0x07:
            raise ProtocolError(f"frame flags {flags:#x}")
        size = int.from_bytes(await src.readexactly(8 if flags & 0x02 else 1), "big")
        if flags & 0x04:  # a command
            if size > COMMAND_LIMIT:
                raise ProtocolError(f"a command of {size} bytes")
            body = await src.readexactly(size)
            dst.write(bytes([flags]) + (size.to_bytes(8, "big") if flags & 0x02 else bytes([size])) + body)
            await dst.drain()
            continue
        if not oversized and (held + size + PART_COST > limit or len(parts) >= MESSAGE_PARTS):
            if not cuttable:
                raise MessageTooLarge(f"a message of more than {limit / 2**20:g} MB or {MESSAGE_PARTS} parts")
            oversized = True
        if oversized:
            keep = min(size, HEAD_BYTES) if len(parts) < HEAD_PARTS else 0
            if keep:
                parts.append(await src.readexactly(keep))
            await _skip(src, size - keep)
        else:
            parts.append(await src.readexactly(size))
            held += size + PART_COST
        if flags & 0x01:
            continue
        messages = budget.filter(parts, oversized) if cuttable else [parts]
        parts, held, oversized = [], 0, False
        for message in messages:
            for k, part in enumerate(message):  # written part by part: no second copy of a message
                dst.write(frame_header(len(part), k < len(message) - 1))
                dst.write(part)
        del messages
        await dst.drain()


def _chown_tree(root: Path, uid: int) -> None:
    os.chown(root, uid, uid)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            os.lchown(os.path.join(folder, name), uid, uid)


def _record_event(kind: str, message: str, cwd: Path, reason: str | None = None, files: list[str] = ()) -> None:
    """Note a stop of the grader's (never read from the kernel's output): one JSON line in the
    file named by ``$COURSEKIT_SANDBOX_EVENTS`` (the class runner's, for a submission whose
    grading fails) and in each of ``files`` (``--coursekit-sandbox-events=``: SplitExecute's,
    which records the stop with the cell that was running). ``reason``: a key of
    coursekit.core.notebook.STOPS."""
    event = {"kind": kind, "message": message, "cwd": str(cwd)} | ({"reason": reason} if reason else {})
    for target in dict.fromkeys([os.environ.get(EVENTS_ENV) or "", *files]):
        if not target:
            continue
        with contextlib.suppress(OSError):
            fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with open(fd, "a") as f:
                f.write(json.dumps(event) + "\n")


# --- the preflight: one probe per run ----------------------------------------------------------------
#
# A probe starts a trivial command in a sandbox like a kernel's (~0.3 s, a tmpfs mounted, bwrap
# started). One run (the runner, or one `nbgrader autograde`) probes once: the result is kept per
# process, keyed by everything the probe depends on (``probe_key``), and a process whose probe
# succeeded hands the key to the processes it starts (``probed_environment``: the runner to its
# nbgrader processes, nbgrader to its kernels' wrappers, a Dask worker to its nbgrader processes),
# which then skip theirs. Invalidation: a different key (other settings, tools found elsewhere on
# PATH, another Python, another user) probes again; a new run starts from an environment without
# the key; ``forget_probes`` empties this process's results. Skipping a probe weakens nothing:
# every kernel is still started in bubblewrap, and one that cannot start fails its notebook.

_checked: dict[str, str | None] = {}


def probe_key(settings: Settings) -> str:
    """What a probe's result depends on: the settings, the tools it runs, the Python, the user."""
    facts = [repr(settings), shutil.which("bwrap") or "", shutil.which("setpriv") or "", sys.executable,
             str(os.geteuid())]
    return hashlib.sha256("\0".join(facts).encode()).hexdigest()


def probed_environment(settings: Settings) -> dict[str, str]:
    """For the environment of a process this one starts: the key of this process's successful
    probe of ``settings`` (empty if it has not probed them, or the probe failed)."""
    key = probe_key(settings)
    return {PROBED_ENV: key} if key in _checked and _checked[key] is None else {}


def forget_probes() -> None:
    """Probe again on the next ``check`` (this process; its children get the key anew)."""
    _checked.clear()


def check(settings: Settings = Settings()) -> None:
    """Start a trivial command in a sandbox like the kernel's; raise SandboxUnavailable if that fails.
    Once per process and key; not at all if the process that started this one probed the same key."""
    key = probe_key(settings)
    if key not in _checked and os.environ.get(PROBED_ENV) == key:
        _checked[key] = None  # the parent's probe, in this run
    if key not in _checked:
        sandbox = Sandbox([sys.executable, "-I", "-c", "import encodings"], settings, cwd=None)
        try:
            argv = sandbox.prepare()
            proc = subprocess.run(argv, env=sandbox.environment(), capture_output=True, text=True,
                                  preexec_fn=sandbox.limit_child, timeout=60)
            _checked[key] = None if proc.returncode == 0 else (
                f"bubblewrap failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-800:]}")
        except SandboxUnavailable as err:
            _checked[key] = str(err)
        except (OSError, subprocess.SubprocessError) as err:
            _checked[key] = f"{type(err).__name__}: {err}"
        finally:
            sandbox.cleanup()
    if _checked[key]:
        raise SandboxUnavailable(_checked[key])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        settings, command = split_arguments(argv)
    except ValueError as err:
        print(f"coursekit sandbox: {err}", file=sys.stderr)
        return 2
    if not settings.enabled:
        _warn_disabled()
        os.execv(command[0], command)
    die_with_parent()  # SIGTERM when nbgrader dies: the sandbox and scratch go with it
    connection_file = next((command[i + 1] for i, a in enumerate(command[:-1]) if a == "-f"), None) or \
        next((a[4:] for a in command if a.startswith("--f=")), None)
    if connection_file is None:
        print(refusal("the kernel command has no '-f <connection file>'"), file=sys.stderr)
        return 78
    try:
        binds = bind_arguments(argv)
    except ValueError as err:
        print(refusal(str(err)), file=sys.stderr, flush=True)
        return 78
    try:
        events = events_files(argv)
    except ValueError as err:
        print(refusal(str(err)), file=sys.stderr, flush=True)
        return 78
    sandbox = Sandbox(command, settings, cwd=os.getcwd(), binds=binds, events=events)
    try:
        check(settings)
        argv = sandbox.prepare(connection_file)
    except SandboxUnavailable as err:
        sandbox.cleanup()
        print(refusal(str(err)), file=sys.stderr, flush=True)
        return 78
    return sandbox.run(argv)


if __name__ == "__main__":
    sys.exit(main())


def course_settings(layout) -> Settings:
    """The sandbox settings a course's nbgrader_config.py passes to the grading kernels
    (``c.Execute.extra_arguments``): what the runner and its workers compare."""
    args = list(layout.config.Execute.get("extra_arguments", []) or [])
    return Settings.of_arguments(args) or Settings()
