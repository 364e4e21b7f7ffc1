"""A private PostgreSQL server for trying a course's gradebook on PostgreSQL, and for the tests:
Debian's ``postgresql`` binaries, a cluster made with ``initdb`` in a folder of its own, listening
on 127.0.0.1 only, on a free port, with a random password (SCRAM).

    bin/postgres start [FOLDER]   # default build/postgres; prints the URL for db_url
    bin/postgres url [FOLDER]     # the URL again
    bin/postgres stop [FOLDER]

``initdb`` and ``postgres`` refuse to run as root: as root, the cluster belongs to the unprivileged
system user ``postgres`` (Debian's package creates it) and every command runs as that user.
Use the URL as the course's gradebook: ``c.CourseDirectory.db_url = "<url>"`` in
nbgrader_config.py (``/postgres`` at its end is the server's default database; ``create_database``
makes others).
"""

from __future__ import annotations

import argparse
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from sqlalchemy.engine import make_url

SUPERUSER = "coursekit"
SYSTEM_USER = "postgres"  # who runs the server when we are root
DEFAULT_FOLDER = Path(__file__).resolve().parent.parent.parent / "build" / "postgres"


class PostgresUnavailable(RuntimeError):
    pass


def bindir() -> Path:
    """The newest PostgreSQL installed by Debian's packages."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PostgresUnavailable("PostgreSQL is not installed (bin/setup installs it: apt-get install postgresql)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """The cluster in ``folder``: ``data/`` (the server's), ``url`` (0600), ``server.log``."""

    def __init__(self, folder: Path):
        self.folder = Path(folder).resolve()
        self.data = self.folder / "data"
        self.socket_dir = self.folder / "run"
        self.log = self.folder / "server.log"
        self.url_file = self.folder / "url"

    # --- running PostgreSQL's programs as the right user ---

    @property
    def system_user(self) -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise PostgresUnavailable(f"running as root needs the system user '{SYSTEM_USER}' "
                                      "(Debian's postgresql package creates it)") from None

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(bindir() / program), *args]
        user = self.system_user
        if user is not None:
            cmd = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--", *cmd]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/")
        if check and proc.returncode != 0:
            raise PostgresUnavailable(f"{program} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-2000:]}")
        return proc

    def _give(self, path: Path) -> None:
        user = self.system_user
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)

    # --- life cycle ---

    def running(self) -> bool:
        return self.data.is_dir() and self._run("pg_ctl", "status", "-D", str(self.data), check=False).returncode == 0

    def start(self) -> str:
        """Create the cluster if needed, start it on a free port; return the URL of its default database."""
        if self.running():
            return self.url()
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o755)  # the server's user must reach data/ and run/
        if not (self.data / "PG_VERSION").is_file():
            password = secrets.token_urlsafe(24)
            self.data.mkdir(mode=0o700, exist_ok=True)
            self._give(self.data)
            pwfile = self.folder / "initdb-password"
            pwfile.write_text(password + "\n")
            os.chmod(pwfile, 0o600)
            self._give(pwfile)
            try:
                self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}",
                          "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8")
            finally:
                pwfile.unlink()
            self._save_url(password, 0)
        self.socket_dir.mkdir(exist_ok=True)
        self._give(self.socket_dir)
        if not self.log.exists():
            self.log.touch()
        self._give(self.log)
        port = free_port()
        options = f"-h 127.0.0.1 -p {port} -k {self.socket_dir} -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "start", "-w", "-t", "120", "-D", str(self.data), "-l", str(self.log), "-o", options)
        self._save_url(make_url(self.url()).password, port)
        return self.url()

    def stop(self) -> None:
        if self.running():
            self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data))

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    # --- addresses ---

    def _save_url(self, password: str, port: int) -> None:
        url = make_url(f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{port}/postgres").set(password=password)
        self.url_file.write_text(url.render_as_string(hide_password=False) + "\n")
        os.chmod(self.url_file, 0o600)

    def url(self, database: str = "postgres") -> str:
        if not self.url_file.is_file():
            raise PostgresUnavailable(f"no server in {self.folder} (bin/postgres start)")
        url = make_url(self.url_file.read_text().strip())
        return url.set(database=database).render_as_string(hide_password=False)

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its URL."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bin/postgres", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("start", "stop", "url", "remove"))
    parser.add_argument("folder", nargs="?", default=str(DEFAULT_FOLDER))
    args = parser.parse_args(argv)
    server = PostgresServer(Path(args.folder))
    try:
        if args.command == "start":
            print(server.start())
        elif args.command == "url":
            print(server.url())
        elif args.command == "stop":
            server.stop()
        else:
            server.remove()
    except PostgresUnavailable as err:
        print(f"bin/postgres: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
