"""A course hub for the tests: `bin/hub`'s program (python -m coursekit.hosting.hub) on 127.0.0.1 with its
own accounts, course copy, exchange and homes under one temporary folder, and what people do
in it through a real browser (tests/browser.py).

    with RunningHub.start(base) as hub:
        with hub.browser_for("w2-ann") as browser:     # logged in, JupyterLab open
            ...

Stopping removes everything it made: the hub and every user's server are stopped (and any
process the test accounts still run), the accounts and their group are removed, the
repository's owner and mode are put back, the temporary folder is deleted.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from browser import Browser
from coursekit.hosting import hub as hubmod
from coursekit.core.course import REPO_ROOT, Course

INSTRUCTOR, TA, STUDENTS, GROUP = "w2-prof", "w2-ta", ("w2-ann", "w2-bob", "w2-cem"), "w2-staff"
ROSTER = hubmod.Roster(INSTRUCTOR, (TA,), STUDENTS, GROUP)


def free_ports(count: int = 3) -> int:
    """A base port p such that p .. p+count-1 are free on 127.0.0.1."""
    for base in range(18000, 30000, 7):
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free ports")


def processes_of(users) -> list[int]:
    uids = {pwd.getpwnam(u).pw_uid for u in users if _exists(u)}
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid in uids:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False


@dataclass
class RunningHub:
    base: Path
    hub: hubmod.Hub
    process: subprocess.Popen
    passwords: dict[str, str]
    repo_stat: os.stat_result
    screenshots: Path | None = None

    @property
    def url(self) -> str:
        return self.hub.url

    @property
    def course(self) -> Course:
        return Course(self.hub.course)

    @classmethod
    def start(cls, base: Path, screenshots: Path | None = None, timeout: float = 600) -> "RunningHub":
        base.mkdir(parents=True, exist_ok=True)
        os.chmod(base, 0o755)  # the accounts' homes and the hub's folder live here
        for user in ROSTER.roles():  # a run that was killed may have left its accounts behind
            if _exists(user) and hubmod.MARKER not in pwd.getpwnam(user).pw_gecos:
                raise RuntimeError(f"account {user} exists and is not a test account: not touching it")
        hubmod.remove_accounts(ROSTER)
        Course.copy_of(base / "course")
        port = free_ports()
        hub = hubmod.Hub(course=base / "course", home=base / "hub", env=hubmod.default_env(), roster=ROSTER,
                         homes=base / "home", port=port, data_dir=hubmod.shared_data_dir().resolve())
        repo_stat = REPO_ROOT.stat()
        args = ["--port", str(port), "--course", str(hub.course), "--home", str(hub.home), "--homes", str(hub.homes),
                "--instructor", INSTRUCTOR, "--ta", TA, "--students", ",".join(STUDENTS), "--group", GROUP,
                "--data", str(hub.data_dir)]
        process = subprocess.Popen([sys.executable, "-m", "coursekit.hosting.hub", *args], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        running = cls(base, hub, process, {}, repo_stat, screenshots)
        output = []
        deadline = time.monotonic() + timeout
        try:
            for line in process.stdout:
                output.append(line)
                if line.startswith("hub: ready"):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("bin/hub did not get ready")
            else:
                raise RuntimeError("bin/hub exited:\n" + "".join(output))
            running.passwords = json.loads(hub.passwords_file.read_text())
        except BaseException:
            running.stop()
            raise
        return running

    def __enter__(self) -> "RunningHub":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)  # bin/hub stops JupyterHub, which stops every server
                try:
                    self.process.wait(90)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait()
            for pid in processes_of(ROSTER.roles()):  # e.g. a kernel a server left running
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        finally:
            hubmod.remove_accounts(ROSTER)
            os.chown(REPO_ROOT, self.repo_stat.st_uid, self.repo_stat.st_gid)
            os.chmod(REPO_ROOT, self.repo_stat.st_mode & 0o7777)
            shutil.rmtree(self.base, ignore_errors=True)

    # --- people -----------------------------------------------------------------------------

    def browser_for(self, user: str, login_shot: str | None = None) -> Browser:
        """A fresh browser, logged in as ``user`` through the hub's log-in page, JupyterLab open
        (``login_shot``: a screenshot of the filled-in log-in page by that name)."""
        browser = Browser.start(self.screenshots)
        try:
            browser.open(self.url + "hub/login")
            browser.type_into("#username_input", user)
            browser.type_into("#password_input", self.passwords[user])
            if login_shot:
                browser.shot(login_shot)
            browser.click("#login_submit")
            browser.find("#jp-main-dock-panel", 180)
        except BaseException:
            browser.quit()
            raise
        return browser

    def user_url(self, user: str, path: str = "") -> str:
        return f"{self.url}user/{user}/{path}"

    def environment(self, user: str) -> dict[str, str]:
        """The environment the hub gives ``user``'s server (hub/jupyterhub_config.py)."""
        settings = json.loads((self.hub.state / "settings.json").read_text())
        role = settings["roles"][user]
        env = {"HOME": str(self.hub.homes / user), "USER": user, "LANG": "C.UTF-8",
               "PATH": f"{settings['env']}/bin:/usr/bin:/bin", "JUPYTER_CONFIG_PATH": settings["role_config"][role],
               "COURSEKIT_EXCHANGE": settings["exchange"], "COURSEKIT_COURSE_ID": settings["course_id"],
               "COURSEKIT_DATA_DIR": settings["data_dir"], "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONNOUSERSITE": "1"}
        if role == "staff":
            env["PYTHONPATH"] = settings["repo"]
        return env

    def run_as(self, user: str, *cmd: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        """``cmd`` as ``user`` (runuser), with that user's hub environment, in their home."""
        env = self.environment(user)
        return subprocess.run(["runuser", "-u", user, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()], *cmd],
                              cwd=cwd or env["HOME"], capture_output=True, text=True, errors="replace", timeout=timeout)

    def staff_gid(self) -> int:
        return grp.getgrnam(GROUP).gr_gid
