"""Who can use the course's Dask cluster (coursekit/grading/cluster.py). The workers run as root (the
sandbox needs it), so whoever talks to the scheduler or a worker runs code as root, and whoever
joins as a worker answers the runner. Here a throwaway local account (as every student has on
the course hub) attacks real clusters on 127.0.0.1:

- Dask's stock plain-TCP set-up: the account runs ``os.getuid`` on the workers through the
  scheduler, and directly on a worker and on its nanny, and gets 0; its own ``dask worker``
  joins the cluster;
- the course's set-up (mutual TLS with the course's certificates): it cannot read the keys,
  cannot connect (plain TCP, or TLS with a certificate of its own making), and its worker
  never joins;
- the runner refuses a ``tcp://`` scheduler, saying why and how to fix it, before it connects;
- what a worker sends back is plain data, checked field by field before the runner uses it.

Grading through the TLS cluster is tests/grading/test_cluster.py (its cluster is the course's set-up).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest

from builder import ASSIGNMENT
from coursekit.grading import cluster, runner
from coursekit.core.course import grading_env
from daskcluster import START_TIMEOUT, LoopbackCluster

ATTACKER = "ck-dask-attacker"
MARKER = "coursekit test Dask attacker"  # GECOS: no colon
WAITING = "Waiting to connect to:"  # what a dask worker logs each time the scheduler turns it away
SYSTEM_PYTHON = "/usr/bin/python3.11"  # the account cannot enter /root, where the venv's Python lives

# Run by the attacker: what it can read and do with the cluster at argv[1], and straight to the
# processes of argv[2] ("worker=ADDRESS,nanny=ADDRESS": both have a 'run' handler).
ATTACK = r'''
import asyncio, json, os, sys
from distributed import Client, Security
from distributed.core import rpc
from distributed.protocol.pickle import dumps, loads

address, keys = sys.argv[1], sys.argv[3]
members = dict(item.split("=", 1) for item in sys.argv[2].split(","))
found = {"uid": os.getuid(), "read": [], "unreadable": []}
for name in sorted(os.listdir(keys)) if os.access(keys, os.R_OK) else ["ca.pem", "client-key.pem", "worker-key.pem"]:
    try:
        open(os.path.join(keys, name), "rb").read()
        found["read"].append(name)
    except OSError:
        found["unreadable"].append(name)
own = Security.temporary()  # a certificate authority of its own making
plain = address.replace("tls://", "tcp://")
for label, target, security in (("plain", plain, None), ("own-ca", address.replace("tcp://", "tls://"), own)):
    try:
        with Client(target, timeout="10s", set_as_default=False, security=security) as client:
            found[label] = {"uids": sorted(client.run(os.getuid).values())}
    except Exception as err:
        found[label] = {"error": f"{type(err).__name__}: {err}"[:300]}

async def direct(target, security):
    """The worker's (or nanny's) own 'run' handler, without the scheduler."""
    args = security.get_connection_args("client") if security else {}
    async with rpc(target, connection_args=args, timeout=10) as w:
        answer = await w.run(function=dumps(os.getuid), args=dumps(()), kwargs=dumps({}))
        return answer["result"]

for member, at in members.items():
    for label, target, security in ((f"{member}-plain", at.replace("tls://", "tcp://"), None),
                                    (f"{member}-own-ca", at.replace("tcp://", "tls://"), own)):
        try:
            found[label] = {"uids": [asyncio.run(asyncio.wait_for(direct(target, security), 20))]}
        except BaseException as err:
            found[label] = {"error": f"{type(err).__name__}: {err}"[:300]}
print(json.dumps(found))
'''


# --- the attacker: a local account, and a Python with distributed it can run ----------------------


@dataclasses.dataclass
class Attacker:
    name: str
    uid: int
    gid: int
    folder: Path   # world-readable: the attacker's Python packages and script
    home: Path     # the attacker's own

    def command(self, *args: str) -> list[str]:
        env = {"HOME": str(self.home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
               "PYTHONPATH": str(self.folder / "site"), "PYTHONNOUSERSITE": "1", "DASK_CONFIG": str(self.home)}
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--no-new-privs", "--",
                "env", "-i", *[f"{k}={v}" for k, v in env.items()], SYSTEM_PYTHON, *args]

    def attack(self, address: str, members: str) -> dict:
        proc = subprocess.run(self.command(str(self.folder / "attack.py"), address, members, str(cluster.TLS_FOLDER)),
                              capture_output=True, text=True, timeout=300, cwd=self.home)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def start_worker(self, address: str, log: Path, *options: str) -> subprocess.Popen:
        with open(log, "wb") as out:
            return subprocess.Popen(self.command("-m", "distributed.cli.dask_worker", address, "--name", "rogue",
                                                 "--nthreads", "1", "--no-nanny", "--no-dashboard",
                                                 "--local-directory", str(self.home / "dask"), *options),
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=self.home, start_new_session=True)


def _packages_of_distributed(dest: Path) -> None:
    """The site-packages entries a client and worker of distributed import, linked into ``dest``
    (an account may always install distributed for itself: this is that copy)."""
    site = Path(sysconfig.get_paths()["purelib"])
    code = ("import sys, json, distributed, distributed.cli.dask_worker, cryptography.x509\n"
            "from cryptography.hazmat.primitives.asymmetric import rsa\n"
            "print(json.dumps(sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, '__file__', None)})))")
    files = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    tops = {Path(f).relative_to(site).parts[0] for f in files if f.startswith(f"{site}/")}
    dest.mkdir()
    for top in sorted(tops):
        if top.startswith(("__editable__", "_distutils_hack")):
            continue
        if (site / top).is_dir():
            shutil.copytree(site / top, dest / top, copy_function=_link_or_copy)
        else:
            _link_or_copy(site / top, dest / top)
    for info in site.glob("*.dist-info"):  # versions, read with importlib.metadata
        shutil.copytree(info, dest / info.name, copy_function=_link_or_copy)
    subprocess.run(["chmod", "-R", "a+rX", str(dest)], check=True)


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@pytest.fixture(scope="module")
def attacker():
    try:
        entry = pwd.getpwnam(ATTACKER)
        if MARKER not in entry.pw_gecos:
            pytest.fail(f"account {ATTACKER} exists and is not this test's: not touching it")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        "--comment", MARKER, "--user-group", ATTACKER], check=True, capture_output=True)
        entry = pwd.getpwnam(ATTACKER)
    folder = Path(tempfile.mkdtemp(prefix="ck-dask-attacker-", dir="/tmp"))
    try:
        os.chmod(folder, 0o755)
        _packages_of_distributed(folder / "site")
        (folder / "attack.py").write_text(ATTACK)
        os.chmod(folder / "attack.py", 0o644)
        home = folder / "home"
        home.mkdir(mode=0o700)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        yield Attacker(ATTACKER, entry.pw_uid, entry.pw_gid, folder, home)
    finally:
        _kill_processes_of(entry.pw_uid)
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run(["userdel", ATTACKER], capture_output=True)


def _kill_processes_of(uid: int) -> None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                pass


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


def _worker_names(dask: LoopbackCluster) -> set[str]:
    return {w.get("name") for w in dask.client.scheduler_info(n_workers=-1)["workers"].values()}


def _clients(dask: LoopbackCluster) -> set[str]:
    return set(dask.client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.clients)))


@pytest.fixture(scope="module")
def plain_cluster(tmp_path_factory):
    """Dask's stock set-up as the README had it: scheduler and a worker as root, plain TCP."""
    with LoopbackCluster(tmp_path_factory.mktemp("plain-dask"), env=grading_env(), tls=False) as dask:
        dask.add_worker("w1")
        yield dask
    assert not dask.leftovers()


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    """The course's set-up: the same, with the course's certificates (mutual TLS)."""
    with LoopbackCluster(tmp_path_factory.mktemp("tls-dask"), env=grading_env()) as dask:
        dask.add_worker("w1")
        yield dask
    assert not dask.leftovers()


def _members(dask: LoopbackCluster) -> str:
    """A worker's address and its nanny's, as the attack script takes them."""
    address, info = next(iter(dask.client.scheduler_info(n_workers=-1)["workers"].items()))
    return f"worker={address},nanny={info['nanny']}"


# --- (1) the stock set-up: damage --------------------------------------------------------------


def test_on_plain_tcp_any_local_account_runs_code_as_root_on_the_workers(plain_cluster, attacker):
    found = attacker.attack(plain_cluster.address, _members(plain_cluster))
    assert found["uid"] == attacker.uid != 0
    assert found["plain"] == {"uids": [0]}, found          # through the scheduler: root
    assert found["worker-plain"] == {"uids": [0]}, found   # straight to a worker: root
    assert found["nanny-plain"] == {"uids": [0]}, found    # straight to its nanny: root


def test_on_plain_tcp_any_local_account_joins_as_a_worker(plain_cluster, attacker, tmp_path):
    proc = attacker.start_worker(plain_cluster.address, tmp_path / "rogue.log")
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "rogue" not in _worker_names(plain_cluster) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.3)
        assert "rogue" in _worker_names(plain_cluster), (tmp_path / "rogue.log").read_text()[-2000:]
        # a member like any other: the runner's tasks would go to it, its answers to the runner
        assert attacker.uid in plain_cluster.client.run(os.getuid).values()
    finally:
        _stop(proc)


# --- (2) the course's set-up: no damage --------------------------------------------------------


def test_the_course_keys_are_root_only(tls_cluster):
    folder = cluster.TLS_FOLDER
    assert tls_cluster.certificates == folder
    assert (folder.stat().st_mode & 0o777) == 0o700 and folder.stat().st_uid == os.geteuid()
    for path in cluster.certificate_files(folder).values():
        assert (path.stat().st_mode & 0o777) == 0o600 and path.stat().st_uid == os.geteuid()
    assert not any(p.name.startswith("ca-key") for p in folder.iterdir())  # the authority's key is not kept
    tracked = subprocess.run(["git", "ls-files", str(cluster.TLS_FOLDER_NAME)], cwd=cluster.REPO_ROOT,
                             capture_output=True, text=True).stdout
    ignored = subprocess.run(["git", "check-ignore", "-q", str(cluster.certificate_files(folder)["client-key"])],
                             cwd=cluster.REPO_ROOT)
    assert tracked == "" and ignored.returncode == 0


def test_with_the_course_certificates_a_local_account_can_neither_read_the_keys_nor_connect(tls_cluster, attacker):
    found = attacker.attack(tls_cluster.address, _members(tls_cluster))
    assert found["read"] == [] and "client-key.pem" in found["unreadable"], found
    for attempt in ("plain", "own-ca", "worker-plain", "worker-own-ca", "nanny-plain", "nanny-own-ca"):
        assert "error" in found[attempt], (attempt, found)
    # while the course's own client runs on the same workers, as root
    assert list(tls_cluster.client.run(os.getuid).values()) == [0]


def test_with_the_course_certificates_a_rogue_worker_cannot_join(tls_cluster, attacker, tmp_path):
    """The attacker's worker, with a certificate authority of its own making (it cannot read the
    course's), keeps failing its TLS handshake; the scheduler never counts it."""
    own = attacker.home / "own-certs"
    code = ("import sys, pathlib; from distributed import Security; s = Security.temporary(); "
            "d = pathlib.Path(sys.argv[1]); d.mkdir(exist_ok=True); "
            "(d / 'ca.pem').write_text(s.tls_ca_file); (d / 'cert.pem').write_text(s.tls_worker_cert); "
            "(d / 'key.pem').write_text(s.tls_worker_key)")
    subprocess.run(attacker.command("-c", code, str(own)), check=True, capture_output=True, timeout=120)
    log = tmp_path / "rogue.log"
    proc = attacker.start_worker(tls_cluster.address, log, "--tls-ca-file", str(own / "ca.pem"),
                                 "--tls-cert", str(own / "cert.pem"), "--tls-key", str(own / "key.pem"))
    try:
        deadline = time.monotonic() + START_TIMEOUT
        # until it has been turned away 50 times (it retries every ~0.1 s), or it joined
        while (log.read_text(errors="replace").count(WAITING) < 50
               and "rogue" not in _worker_names(tls_cluster) and proc.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.5)
        text = log.read_text(errors="replace")
        assert text.count(WAITING) >= 50 and proc.poll() is None, text[-3000:]
        assert _worker_names(tls_cluster) == {"w1"}
        assert list(tls_cluster.client.run(os.getuid).values()) == [0]
    finally:
        _stop(proc)


# --- (3) the runner refuses plain TCP ------------------------------------------------------------


def test_the_runner_refuses_a_plain_tcp_scheduler_before_connecting(plain_cluster, generated_course, tmp_path):
    from conftest import course_copy
    from test_runner import CLASS, build_class

    course = course_copy(generated_course, tmp_path / "course")
    build_class(course)
    before = _clients(plain_cluster)
    proc = subprocess.run([sys.executable, "-m", "coursekit.grading.runner", ASSIGNMENT, "--no-progress", "--course",
                           str(course.root), "--scheduler", plain_cluster.address],
                          capture_output=True, text=True, timeout=600, env=grading_env())
    assert proc.returncode == 2, proc.stdout + proc.stderr[-3000:]
    message = proc.stderr
    assert f"refusing the Dask scheduler {plain_cluster.address}" in message
    assert "every account of this machine" in message and "as root" in message  # why
    assert "--tls-cert" in message and "tls://HOST:8786" in message             # how to fix it
    assert _clients(plain_cluster) == before                                    # it never connected
    assert not any(course.layout.autograded(student, ASSIGNMENT).exists() for student in CLASS)
    with pytest.raises(cluster.ClusterSecurityError, match="authenticates nobody"):
        cluster.DaskPool(plain_cluster.address)


def test_the_pool_refuses_any_connection_without_mutual_tls():
    from distributed import Security

    with pytest.raises(cluster.ClusterSecurityError, match="authenticates nobody"):
        cluster.DaskPool("tcp://127.0.0.1:1", security=Security.temporary())  # certificates, plain address
    with pytest.raises(cluster.ClusterSecurityError, match="without mutual TLS"):
        cluster.DaskPool("tls://127.0.0.1:1", security=Security())            # TLS address, no certificate
    with pytest.raises(cluster.ClusterSecurityError, match="authenticates nobody"):
        cluster.DaskPool("127.0.0.1:8786")                                     # Dask's default: tcp


def test_the_runner_refuses_keys_other_accounts_can_read(tmp_path):
    folder = cluster.ensure_certificates(tmp_path)
    assert cluster.course_security(folder).require_encryption
    os.chmod(folder / "worker-key.pem", 0o644)
    with pytest.raises(cluster.ClusterSecurityError, match="mode 600"):
        cluster.course_security(folder)
    os.chmod(folder / "worker-key.pem", 0o600)
    os.chmod(folder, 0o755)
    with pytest.raises(cluster.ClusterSecurityError, match="no other account can open"):
        cluster.course_security(folder)


def test_certificates_are_made_once_and_kept(tmp_path):
    folder = cluster.ensure_certificates(tmp_path)
    first = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert set(first) == {p.name for p in cluster.certificate_files(folder).values()}
    assert cluster.ensure_certificates(tmp_path) == folder
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == first  # a copied set stays valid
    (folder / "worker.pem").unlink()                                     # incomplete: a new set
    cluster.ensure_certificates(tmp_path)
    assert (folder / "ca.pem").read_bytes() != first["ca.pem"]
    assert not list(tmp_path.joinpath(".cache").glob(".dask-tls-*"))


# --- what a worker sends back --------------------------------------------------------------------


def _graded() -> runner.Graded:
    rows = {"student": [{"id": "ada", "first_name": None, "last_name": None, "email": None, "lms_user_id": None}],
            "submitted_assignment": [{"id": "x1", "assignment_id": "a1", "student_id": "ada",
                                      "timestamp": datetime.datetime(2026, 1, 2), "extension": None}],
            "grade": [{"id": "g1", "notebook_id": "n1", "cell_id": "c1", "auto_score": 2.0, "manual_score": None,
                       "extra_credit": None, "needs_manual_grade": False}]}
    return runner.Graded("ada", 0, "log", [{"kind": "timeout", "message": "m", "cwd": "/x"}], b"tar", rows,
                         "digest", "node1", 12.5)


def test_a_workers_answer_is_plain_data_and_read_back_as_it_was_sent():
    graded = _graded()
    data = cluster.graded_as_data(graded)
    assert type(data) is dict and not any(dataclasses.is_dataclass(v) for v in data.values())
    assert cluster.graded_from_data(data, "ada") == graded
    refused = cluster.graded_from_data({"refused": "on n1: no sandbox"}, "ada")
    assert isinstance(refused, runner.Refused) and str(refused) == "on n1: no sandbox"


@pytest.mark.parametrize("change", [
    lambda d: d.update(student="bob"),                                  # another student's grading
    lambda d: d.update(returncode="0"),
    lambda d: d.update(returncode=True),
    lambda d: d.update(archive="tar"),
    lambda d: d.update(extra=1),
    lambda d: d.pop("host"),
    lambda d: d["events"].append({"kind": "timeout"}),
    lambda d: d["events"].append({"kind": "x", "message": "m", "exec": "y"}),
    lambda d: d["rows"].update(assignment=[]),                          # not a table of a submission
    lambda d: d["rows"]["grade"][0].update(owner="mallory"),           # not a column of its table
    lambda d: d["rows"]["grade"][0].update(auto_score="2"),
    lambda d: d["rows"]["grade"][0].update(auto_score=True),
    lambda d: d["rows"]["submitted_assignment"][0].update(timestamp="2026-01-02"),
], ids=["other-student", "str-code", "bool-code", "str-archive", "extra-field", "missing-field", "event-fields",
        "event-extra", "other-table", "other-column", "str-score", "bool-score", "str-timestamp"])
def test_a_malformed_answer_is_refused(change):
    data = cluster.graded_as_data(_graded())
    change(data)
    with pytest.raises(cluster.MalformedAnswer):
        cluster.graded_from_data(data, "ada")
    with pytest.raises(cluster.MalformedAnswer):
        cluster.graded_from_data(runner.Graded, "ada")  # an object rather than data
