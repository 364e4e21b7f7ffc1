"""The course on JupyterHub, on this machine: ``bin/hub`` (docs/operations.md, "Running the course on JupyterHub").

One command, as root, sets up and starts the whole course loop on 127.0.0.1:

- **accounts**: a Unix account for the instructor, each TA and each student (made if missing,
  marked "coursekit hub" in their GECOS field; an existing account bin/hub did not make is
  never taken over), each with a generated password for PAM log-in, kept in the hub's private
  state folder (``<hub home>/state/passwords.json``, root only). The instructor and the TAs
  form the staff group; students are never in it.
- **who reads what**: the repository (solutions, hidden tests, mark schemes, the grading
  modules, its .venv, its git history) and the course folder (gradebook, submissions, grading
  results, feedback) belong to root and the staff group, mode 0750: students cannot even
  enter them. Inside the course folder only what staff must write is group-writable
  (submitted/, feedback/, gradebook/); the folder itself and nbgrader_config.py are not,
  because grading runs as root and executes that config: a TA must not be able to replace it.
- **the exchange**: nbgrader's exchange at ``<hub home>/exchange`` (outside the course),
  mode 1777 as nbgrader requires, with the course's folder owned by the instructor and setgid
  to the staff group: submissions then belong to the staff group, and the students' nbgrader
  (hub/student/nbgrader_config.py) makes them unreadable to other students.
- **the servers' environment**: ``/opt/coursekit-hub/env-<checkout>`` (``ensure_env``, run by
  bin/setup): Python from /usr/bin (the repository's may live in root's home), the course's
  pinned Jupyter, nbgrader and TensorFlow, and the students' coursekit wheel
  (coursekit/hosting/student_wheel.py): a student's kernel can import the data loaders and the check
  helpers and nothing else of this repository.
- **the hub**: JupyterHub with hub/jupyterhub_config.py, configurable-http-proxy from npm
  (bin/setup installs it under .cache/hub-proxy), LocalProcessSpawner, nbgrader's Assignments
  tab for students and Formgrader for staff.

Grading stays as docs/operations.md describes it: root runs ``python -m coursekit.grading.runner week2`` in the
course folder (the sandbox needs root), with ``umask 007`` so that what it writes stays in the
staff group.
"""

from __future__ import annotations

import argparse
import grp
import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
HUB_FILES = REPO_ROOT / "hub"  # jupyterhub_config.py and the role folders
ASSIGNMENT = "week2"  # the assignment the hub hands out
ROLES = ("student", "staff")
PROXY_VERSION = "5.3.0"
PROXY_DIR = REPO_ROOT / ".cache" / "hub-proxy"
PROXY = PROXY_DIR / "node_modules" / ".bin" / "configurable-http-proxy"
SYSTEM_PYTHON = Path("/usr/bin/python3.11")
# The servers' and kernels' environment: Jupyter with nbgrader's extensions, and what the
# notebooks import. Versions come from requirements.lock, as in the grading environment.
ENV_PACKAGES = ("jupyterhub", "jupyterlab", "nbgrader", "ipykernel", "tensorflow-cpu", "numpy", "matplotlib")
MARKER = "coursekit hub"  # GECOS of the accounts made here
NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
DEFAULT_HOME = Path("/srv/coursekit-hub")


class HubError(RuntimeError):
    pass


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise HubError(f"{' '.join(map(str, cmd))} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc


# --- the servers' environment ---------------------------------------------------------------------


def default_env() -> Path:
    """One environment per checkout (two checkouts may pin different packages)."""
    return Path("/opt/coursekit-hub") / f"env-{hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:10]}"


def constraints_for(python: Path) -> tuple[str, list[str]]:
    """requirements.lock without the pins that ``python`` cannot install (a locked version may
    need a newer 3.11.x than Debian's); pip picks a compatible version of those. Read from the
    grading environment's own metadata: no index is asked."""
    from importlib.metadata import distribution, PackageNotFoundError

    from packaging.specifiers import SpecifierSet

    version = run([str(python), "-c", "import platform; print(platform.python_version())"]).stdout.strip()
    kept, dropped = [], []
    for line in (REPO_ROOT / "requirements.lock").read_text().splitlines():
        name = line.split("==")[0].strip()
        if "==" in line and not line.startswith("#"):
            try:
                needs = distribution(name).metadata.get("Requires-Python")
            except PackageNotFoundError:
                needs = None
            if needs and version not in SpecifierSet(needs):
                dropped.append(f"{line} (needs Python {needs})")
                continue
        kept.append(line)
    return "\n".join(kept) + "\n", dropped


def ensure_env(env: Path, wheel: Path, log=print) -> Path:
    """Create or update the environment every user's server and kernel runs in."""
    packages_key = hashlib.sha256((REPO_ROOT / "requirements.lock").read_bytes() + repr(ENV_PACKAGES).encode()).hexdigest()
    wheel_key = hashlib.sha256(wheel.read_bytes()).hexdigest()
    python = env / "bin" / "python"
    stamp = env / ".coursekit-hub-env.json"
    try:
        done = json.loads(stamp.read_text())
    except (OSError, ValueError):
        done = {}
    if done.get("packages") != packages_key or not python.exists():
        log(f"hub: building the servers' environment in {env} (a few minutes)")
        shutil.rmtree(env, ignore_errors=True)
        env.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(env.parent, 0o755)
        run([str(SYSTEM_PYTHON), "-m", "venv", str(env)])
        constraints, dropped = constraints_for(python)
        for pin in dropped:
            log(f"hub: not pinning {pin}: {SYSTEM_PYTHON} is older")
        (env / "constraints.txt").write_text(constraints)
        run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
             "-c", str(env / "constraints.txt"), *ENV_PACKAGES])
        done = {"packages": packages_key}
    if done.get("wheel") != wheel_key:
        run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
             "--force-reinstall", str(wheel)])
        done["wheel"] = wheel_key
        run(["chmod", "-R", "a+rX,go-w", str(env)])  # every account's server runs from it
        stamp.write_text(json.dumps(done))
    from coursekit.rendering.formgrader import install_default_config  # nbgrader's formgrader off (the staff's config has the course's)
    install_default_config(env, course_formgrader=False)
    return env


# --- accounts --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Roster:
    instructor: str
    tas: tuple[str, ...]
    students: tuple[str, ...]
    group: str  # the staff's Unix group

    def __post_init__(self):
        names = [self.instructor, *self.tas, *self.students]
        for name in [*names, self.group]:
            if not NAME.match(name):
                raise HubError(f"'{name}' is not a valid account or group name (lower case, digits, - and _)")
        if len(set(names)) != len(names):
            raise HubError("an account cannot have two roles")

    @property
    def staff(self) -> tuple[str, ...]:
        return (self.instructor, *self.tas)

    def roles(self) -> dict[str, str]:
        return {**{s: "staff" for s in self.staff}, **{s: "student" for s in self.students}}


def _exists(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def ensure_accounts(roster: Roster, homes: Path, passwords_file: Path) -> dict[str, str]:
    """Make the accounts and the staff group; set each account's password. Returns the passwords."""
    try:
        grp.getgrnam(roster.group)
    except KeyError:
        run(["groupadd", roster.group])
    homes.mkdir(parents=True, exist_ok=True)
    saved = json.loads(passwords_file.read_text()) if passwords_file.is_file() else {}
    passwords = {}
    for name, role in roster.roles().items():
        entry = _exists(name)
        if entry is None:
            run(["useradd", "--create-home", "--home-dir", str(homes / name), "--shell", "/bin/bash",
                 "--comment", f"{MARKER} {role}", "--user-group", name])
            os.chmod(homes / name, 0o700)
        elif MARKER not in entry.pw_gecos:
            raise HubError(f"the account '{name}' exists and was not made by bin/hub: choose other names "
                           "(--instructor, --ta, --students) rather than take over someone's account")
        passwords[name] = saved.get(name) or secrets.token_urlsafe(12)
    members = set(grp.getgrnam(roster.group).gr_mem)
    for name in roster.staff:
        if name not in members:
            run(["usermod", "--append", "--groups", roster.group, name])
    for name in roster.students:
        if name in members:
            run(["gpasswd", "--delete", name, roster.group])
    run(["chpasswd"], input="".join(f"{n}:{p}\n" for n, p in passwords.items()))
    passwords_file.parent.mkdir(parents=True, exist_ok=True)
    passwords_file.write_text(json.dumps(passwords, indent=1) + "\n")
    os.chmod(passwords_file, 0o600)
    return passwords


def remove_accounts(roster: Roster, closed: tuple[Path, ...] = ()) -> None:
    """Remove the accounts bin/hub made (and their home folders) and the staff group; the
    folders in ``closed`` that belonged to that group go to group root (a group made later
    could otherwise get its number, and with it their contents)."""
    for name in roster.roles():
        entry = _exists(name)
        if entry is not None and MARKER in entry.pw_gecos:
            subprocess.run(["userdel", "--remove", name], capture_output=True)
    try:
        gid = grp.getgrnam(roster.group).gr_gid
    except KeyError:
        return
    for folder in closed:
        if folder.exists() and folder.stat().st_gid == gid:
            os.chown(folder, 0, 0)
    subprocess.run(["groupdel", roster.group], capture_output=True)


# --- who reads what --------------------------------------------------------------------------------


def restrict(path: Path, gid: int, mode: int) -> None:
    os.chown(path, 0, gid)
    os.chmod(path, mode)


def prepare_course(course: Path, group: str, log=print) -> None:
    """Close the repository and the course folder to everyone but root and the staff group."""
    gid = grp.getgrnam(group).gr_gid
    for closed in {REPO_ROOT, course}:
        restrict(closed, gid, 0o750)
    from coursekit.core.course import Course

    if not gradebook_knows(course, ASSIGNMENT):
        log(f"hub: generating {ASSIGNMENT} into the course's gradebook (nbgrader generate_assignment)")
        Course(course).generate(ASSIGNMENT)
    for name in ("submitted", "feedback", "gradebook"):  # what staff write
        folder = course / name
        folder.mkdir(exist_ok=True)
        run(["chgrp", "-R", group, str(folder)])
        run(["chmod", "-R", "g+rwX", str(folder)])
        os.chmod(folder, 0o2770)
    autograded = course / "autograded"  # written by root's runner, read by staff
    autograded.mkdir(exist_ok=True)
    restrict(autograded, gid, 0o2750)


def gradebook_knows(course: Path, assignment: str) -> bool:
    """Whether the course's gradebook has the assignment's notebooks (what autograde needs; the
    due date alone, which bin/setup writes, is not enough)."""
    from nbgrader.api import MissingEntry

    from coursekit.core.layout import CourseLayout

    layout = CourseLayout.load(course)
    if layout.gradebook_path is not None and not layout.gradebook_path.is_file():
        return False
    with layout.gradebook() as gb:
        try:
            return bool(gb.find_assignment(assignment).notebooks)
        except MissingEntry:
            return False


def prepare_exchange(exchange: Path, course_id: str, roster: Roster) -> Path:
    exchange.mkdir(parents=True, exist_ok=True)
    restrict(exchange, 0, 0o1777)  # nbgrader wants it writable by all; sticky: no one removes another's
    course_dir = exchange / course_id
    course_dir.mkdir(exist_ok=True)
    os.chown(course_dir, pwd.getpwnam(roster.instructor).pw_uid, grp.getgrnam(roster.group).gr_gid)
    os.chmod(course_dir, 0o2755)  # setgid: inbound/ and every submission belong to the staff group
    return course_dir


def install_role_configs(etc: Path) -> dict[str, str]:
    folders = {}
    for role in ROLES:
        target = etc / role
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(HUB_FILES / role, target)
        folders[role] = str(target)
    run(["chmod", "-R", "a+rX,go-w", str(etc)])
    return folders


# --- the hub ---------------------------------------------------------------------------------------


@dataclass
class Hub:
    course: Path
    home: Path
    env: Path
    roster: Roster
    homes: Path
    port: int
    data_dir: Path | None

    @property
    def state(self) -> Path:
        return self.home / "state"

    @property
    def exchange(self) -> Path:
        return self.home / "exchange"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def passwords_file(self) -> Path:
        return self.state / "passwords.json"

    def course_id(self) -> str:
        from coursekit.core.layout import CourseLayout

        return CourseLayout.load(self.course).course_id

    def prepare(self, log=print) -> dict[str, str]:
        if os.geteuid() != 0:
            raise HubError("bin/hub must run as root: it makes Unix accounts and starts each user's server as that user")
        if not PROXY.exists():
            raise HubError(f"configurable-http-proxy is not installed ({PROXY}): run bin/setup")
        if not (self.env / "bin" / "jupyterhub-singleuser").exists():
            raise HubError(f"the servers' environment {self.env} is missing: run bin/setup")
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o755)
        self.state.mkdir(exist_ok=True)
        restrict(self.state, 0, 0o700)
        passwords = ensure_accounts(self.roster, self.homes, self.passwords_file)
        prepare_course(self.course, self.roster.group, log)
        course_id = self.course_id()
        prepare_exchange(self.exchange, course_id, self.roster)
        settings = {
            "port": self.port, "hub_port": self.port + 1, "proxy_api_port": self.port + 2,
            "proxy": str(PROXY), "state": str(self.state), "env": str(self.env),
            "course": str(self.course), "repo": str(REPO_ROOT), "exchange": str(self.exchange),
            "course_id": course_id, "data_dir": str(self.data_dir) if self.data_dir else "",
            "roles": self.roster.roles(), "role_config": install_role_configs(self.home / "etc"),
            "services": self.services(),
        }
        (self.state / "settings.json").write_text(json.dumps(settings, indent=1) + "\n")
        if self.data_dir and self.roster.students:
            probe = subprocess.run(["runuser", "-u", self.roster.students[0], "--", "test", "-r", str(self.data_dir)])
            if probe.returncode != 0:
                log(f"hub: warning: students cannot read {self.data_dir}: their loaders will try Keras' download")
        return passwords

    def services(self) -> list[dict]:
        """JupyterHub-managed services (hub/jupyterhub_config.py): grading on submit when the
        course's nbgrader_config.py enables it (coursekit/hosting/submit_service.py); none otherwise."""
        from coursekit.core.layout import CourseLayout
        from coursekit.hosting.submit_service import SubmitGrading

        if not SubmitGrading(config=CourseLayout.load(self.course).config).enabled:
            return []
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
               "COURSEKIT_EXCHANGE": str(self.exchange), "TF_CPP_MIN_LOG_LEVEL": "3"}
        if self.data_dir:
            env["COURSEKIT_DATA_DIR"] = str(self.data_dir)
        return [{"name": "submit-grading", "cwd": str(self.course), "environment": env,
                 "command": [sys.executable, "-m", "coursekit.hosting.submit_service", "--course", str(self.course),
                             "--exchange", str(self.exchange), "--assignment", ASSIGNMENT]}]

    def start(self) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
        env["COURSEKIT_HUB_SETTINGS"] = str(self.state / "settings.json")
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
        env["CONFIGPROXY_AUTH_TOKEN"] = secrets.token_hex(32)
        log = open(self.state / "jupyterhub.log", "ab")
        return subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(HUB_FILES / "jupyterhub_config.py")],
                                cwd=self.state, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, process: subprocess.Popen, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise HubError(f"JupyterHub exited ({process.returncode}); see {self.state / 'jupyterhub.log'}")
            try:
                with urllib.request.urlopen(self.url + "hub/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise HubError(f"JupyterHub did not answer at {self.url} within {timeout:.0f} s")


def stop(process: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM: JupyterHub stops every user's server and the proxy, then exits."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def shared_data_dir() -> Path | None:
    """The data folder the students' kernels are pointed at (the repository's own data/ is closed)."""
    from coursekit.student import datapaths

    return next((d for d in datapaths.data_dirs() if d != datapaths.COURSE_DATA_DIR and d.is_dir()), None)


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(prog="bin/hub", description=(
        "Start the course on JupyterHub at http://127.0.0.1:PORT/ (as root): Unix accounts with "
        "passwords, nbgrader's exchange and extensions, students kept out of the course folder."))
    parser.add_argument("--port", type=int, default=8000, help="the address people open (PORT+1, PORT+2: hub and proxy API)")
    parser.add_argument("--course", type=Path, default=REPO_ROOT, help="course folder (default: this repository)")
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help=f"the hub's folder: exchange, state, configs (default {DEFAULT_HOME})")
    parser.add_argument("--env", type=Path, default=None, help="the servers' environment (default: the one bin/setup built)")
    parser.add_argument("--homes", type=Path, default=Path("/home"), help="where new accounts get their home folder")
    parser.add_argument("--instructor", default="instructor")
    parser.add_argument("--ta", action="append", dest="tas", help="a TA account (repeat for more; default: ta)")
    parser.add_argument("--students", default="student1,student2,student3", help="comma-separated student accounts")
    parser.add_argument("--group", default="coursekit-staff", help="the staff's Unix group")
    parser.add_argument("--data", type=Path, default=shared_data_dir(),
                        help="data folder the kernels read (default: the first of coursekit.student.datapaths' "
                             "folders that holds the data sets: $COURSEKIT_DATA_DIR or ../shared/data)")
    parser.add_argument("--remove-accounts", action="store_true", help="remove the accounts and group bin/hub made, and stop")
    args = parser.parse_args(argv)
    roster = Roster(args.instructor, tuple(args.tas or ["ta"]), tuple(s for s in args.students.split(",") if s), args.group)
    hub = Hub(course=args.course.resolve(), home=args.home.resolve(), env=(args.env or default_env()).resolve(),
              roster=roster, homes=args.homes.resolve(), port=args.port,
              data_dir=args.data.resolve() if args.data else None)
    return args, hub


def main(argv: list[str] | None = None) -> int:
    args, hub = parse_args(argv)
    try:
        if args.remove_accounts:
            closed = tuple(sorted({REPO_ROOT, hub.course}))
            remove_accounts(hub.roster, closed)
            print(f"hub: removed the accounts of {', '.join(hub.roster.roles())} (with their home folders) and "
                  f"the group {hub.roster.group}; {' and '.join(map(str, closed))} stay closed (root only)")
            return 0
        passwords = hub.prepare()
        process = hub.start()
        # Forward, don't wait here: the main thread is already waiting for the hub to exit.
        signal.signal(signal.SIGTERM, lambda *_: process.poll() is None and process.send_signal(signal.SIGTERM))
        try:
            hub.wait_ready(process)
            print(f"hub: ready at {hub.url} (log: {hub.state / 'jupyterhub.log'})")
            for name, role in hub.roster.roles().items():
                who = "instructor" if name == hub.roster.instructor else ("TA" if role == "staff" else "student")
                print(f"  {who:10} {name:16} password {passwords[name]}")
            print(f"hub: passwords are kept in {hub.passwords_file}; Ctrl-C stops the hub and every server", flush=True)
            process.wait()
        except KeyboardInterrupt:
            pass
        finally:
            stop(process)
    except HubError as err:
        print(f"hub: error: {err}", file=sys.stderr)
        return 1
    return 0 if process.returncode in (0, -signal.SIGTERM, None) else process.returncode


if __name__ == "__main__":
    raise SystemExit(main())
