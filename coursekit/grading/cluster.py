"""Grading on a Dask distributed cluster: the class runner's pool when it is given ``--scheduler``.

    python -m coursekit.grading.runner week2 --scheduler tls://HOST:8786

One Dask task per submission runs ``coursekit.grading.runner.grade_submission`` on a worker: the same
code as on one machine (private course copy, the real ``nbgrader autograde``, the sandbox). The
worker gets everything as data from the runner and shares no file with it:

- the course files (config, ``source/``, release, the gradebook's structure; a few hundred KB)
  are one task (``coursekit-course-...``) that every grading task depends on, so Dask sends them
  once to each worker, and the scheduler can send them again if the worker holding them dies;
- each grading task carries its submission folder and the student's gradebook rows, and
  returns the graded folder and the rows nbgrader wrote; the runner merges them: it stays the
  only writer of the gradebook and of ``autograded/``.

Before anything is graded, every worker is asked to check that it can grade as the runner would
(``check``): the sandbox starts, the grading code and packages are the runner's. Each task checks
again on its worker, and also that the course files it unpacked hash as on the runner's disk.
A worker that refuses fails its task with the reason (``submission.Refused``): the runner stops.

A worker that dies while grading (killed, its node lost) takes its task with it; the scheduler
gives the task to another worker, up to ``distributed.scheduler.allowed-failures`` times (3 by
default), after which the submission is reported as not graded. Tasks are handed out a few per
worker thread at a time, so a class of thousands is not held in the scheduler's memory, and each
task's gradebook rows are read just before it is sent.

Whoever can talk to a Dask scheduler or worker can run any code on the workers, which run as
root (the sandbox needs it); whoever can join as a worker answers the runner, which unpickles
what Dask brings back. Plain ``tcp://`` authenticates no one: on 127.0.0.1 every local account
(every student of a course hub) can do both. So the runner talks only to a ``tls://`` scheduler,
with mutual certificate authentication against the course's own certificate authority
(``ensure_certificates``, run by ``bin/setup``; the keys are readable by the set-up's account
only), and scheduler and workers are started with the same certificates (``tls_args``). What a
worker sends back for a submission is plain data (``graded_as_data``), checked field by field
before the runner uses it (``graded_from_data``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import os
import shutil
import socket
import stat
import sys
import tempfile
import uuid
from pathlib import Path

from coursekit.core import gradebook
from coursekit.grading import submission
from coursekit.execution import sandbox
from coursekit.core.course import REPO_ROOT
from coursekit.grading.submission import CourseFiles, Graded, Refused, SubmissionTask

WORKERS_TIMEOUT = 600  # seconds to wait for a first worker (a batch job may be starting)
TASKS_PER_THREAD = 2   # tasks handed out ahead of the workers, so that none waits for the runner


# --- who may be part of the cluster: the course's certificates ----------------------------------
#
# One certificate authority per course installation, made by bin/setup, signs three certificates:
# the scheduler's, the workers' and the client's (the runner). Every connection (client to
# scheduler, worker to scheduler, worker to worker, scheduler to nanny) is TLS and both ends show
# a certificate of that authority (Dask checks both sides: ``ssl.CERT_REQUIRED``). The authority's
# own key is thrown away once the three are signed: nobody, root included, can make a fourth, so a
# copied worker key is the only way in, and a new set (delete the folder, run bin/setup) locks out
# every copy of the old one.

TLS_FOLDER_NAME = Path(".cache") / "dask-tls"   # under the course repository: .gitignore'd with .cache/
TLS_FOLDER = REPO_ROOT / TLS_FOLDER_NAME
ROLES = ("scheduler", "worker", "client")
CERTIFICATE_DAYS = 825        # then bin/setup makes a new set (and the nodes need the new folder)
RENEW_BEFORE_DAYS = 30


class ClusterSecurityError(submission.RunnerError):
    """The runner will not use this scheduler: the connection would not be authenticated."""


def certificate_files(folder: Path = TLS_FOLDER) -> dict[str, Path]:
    """The folder's files: ``ca`` (the authority's certificate), ``<role>`` and ``<role>-key``."""
    files = {"ca": folder / "ca.pem"}
    for role in ROLES:
        files[role] = folder / f"{role}.pem"
        files[f"{role}-key"] = folder / f"{role}-key.pem"
    return files


def ensure_certificates(root: Path = REPO_ROOT) -> Path:
    """The course's certificates in ``root/.cache/dask-tls``: made if missing, incomplete or close
    to expiring, else left alone (so that a folder copied to the grading nodes stays valid). The
    folder is 0700 and every file 0600, owned by this account (root on a course machine): no
    other account can read a key, so no other account can join the cluster or talk to it."""
    folder = Path(root) / TLS_FOLDER_NAME
    if _certificates_valid(folder):
        _check_private(folder)
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=".dask-tls-new-", dir=folder.parent))  # 0700
    try:
        _write_certificates(fresh)
        if os.path.lexists(folder):  # incomplete or expiring: replaced as a whole
            old = Path(tempfile.mkdtemp(prefix=".dask-tls-old-", dir=folder.parent))
            try:
                os.rename(folder, old / "set")
            except FileNotFoundError:
                pass  # another set-up replaced it at the same moment
        try:
            os.rename(fresh, folder)
        except OSError:
            if not _certificates_valid(folder):  # another process made a set first: use it
                raise
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
        for old in folder.parent.glob(".dask-tls-old-*"):
            shutil.rmtree(old, ignore_errors=True)
    _check_private(folder)
    return folder


def _certificates_valid(folder: Path) -> bool:
    from cryptography import x509

    files = certificate_files(folder)
    if folder.is_symlink() or not all(path.is_file() and not path.is_symlink() for path in files.values()):
        return False
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=RENEW_BEFORE_DAYS)
    try:
        certificates = [x509.load_pem_x509_certificate(files[name].read_bytes()) for name in ("ca", *ROLES)]
    except (ValueError, OSError):
        return False
    return all(c.not_valid_after_utc > soon for c in certificates)


def _write_certificates(folder: Path) -> None:
    """A new authority (EC P-256), the three certificates it signs, and their keys, in ``folder``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)  # clock skew
    until = now + datetime.timedelta(days=CERTIFICATE_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "coursekit"),
                         x509.NameAttribute(NameOID.COMMON_NAME,
                                            f"coursekit Dask CA {socket.gethostname()[:30]} {now:%Y-%m-%d}")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(until)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    files = certificate_files(folder)
    _write_private(files["ca"], ca.public_bytes(serialization.Encoding.PEM))
    for role in ROLES:
        key = ec.generate_private_key(ec.SECP256R1())
        name = f"coursekit-dask-{role}"
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "coursekit"),
                                         x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(until)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                             data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                             crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                # every member both listens and connects (workers talk to each other)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        _write_private(files[role], cert.public_bytes(serialization.Encoding.PEM))
        _write_private(files[f"{role}-key"], key.private_bytes(serialization.Encoding.PEM,
                                                                serialization.PrivateFormat.PKCS8,
                                                                serialization.NoEncryption()))
    # ca_key is not written anywhere: see above.


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _check_private(folder: Path) -> None:
    """Refuse keys that another account could read or replace (as ssh does): whoever reads a
    key is a member of the cluster."""
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise ClusterSecurityError(
            f"{folder} must be a folder of this account ({os.geteuid()}) that no other account can open "
            f"(mode 700; it is {stat.S_IMODE(info.st_mode):o}, owner {info.st_uid}): whoever reads a key in "
            f"it can run code as root on the workers. Fix: chown -R {os.geteuid()} {folder}; chmod -R go-rwx {folder}")
    for path in certificate_files(folder).values():
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
            raise ClusterSecurityError(f"{path} must be a file of this account with mode 600 (chmod 600 {path})")


def tls_args(role: str, folder: Path = TLS_FOLDER) -> list[str]:
    """``dask scheduler`` / ``dask worker`` options that make it use the course's certificates."""
    files = certificate_files(folder)
    return ["--tls-ca-file", str(files["ca"]), "--tls-cert", str(files[role]), "--tls-key", str(files[f"{role}-key"])]


def course_security(folder: Path = TLS_FOLDER, roles: tuple[str, ...] = ("client",)):
    """A Dask ``Security`` with the course's certificates for ``roles``, encryption required."""
    from distributed import Security

    if not all(path.is_file() for path in certificate_files(folder).values()):
        raise ClusterSecurityError(f"the course's Dask certificates are missing from {folder}: run bin/setup "
                                   "(or copy that folder from the course machine, keeping its modes)")
    _check_private(folder)
    files = certificate_files(folder)
    kwargs = {f"tls_{role}_{kind}": str(files[role if kind == "cert" else f"{role}-key"])
              for role in roles for kind in ("cert", "key")}
    return Security(require_encryption=True, tls_ca_file=str(files["ca"]), **kwargs)


def insecure_scheduler_refusal(address: str) -> str | None:
    """Why the runner will not use the scheduler at ``address`` (None for ``tls://``)."""
    protocol = address.split("://", 1)[0] if "://" in address else "tcp"
    if protocol == "tls":
        return None
    return (f"refusing the Dask scheduler {address}: {protocol}:// authenticates nobody. Whoever can reach "
            f"its port (on 127.0.0.1: every account of this machine, students included) can run code as root "
            f"on the workers, or join as a worker and send the runner its answers. Start the scheduler and the "
            f"workers with the course's certificates (bin/setup makes them in {TLS_FOLDER}):\n"
            f"    dask scheduler --protocol tls --host HOST --port 8786 {' '.join(tls_args('scheduler'))}\n"
            f"    dask worker tls://HOST:8786 {' '.join(tls_args('worker'))} --nthreads 1 ...\n"
            f"and run the runner with --scheduler tls://HOST:8786 (docs/operations.md, 'Grading on a cluster')")


def scheduler_security(address: str, folder: Path = TLS_FOLDER):
    """The ``Security`` the runner connects with: mutual TLS, or a refusal."""
    refusal = insecure_scheduler_refusal(address)
    if refusal:
        raise ClusterSecurityError(refusal)
    return course_security(folder)


def _hold(course: CourseFiles) -> CourseFiles:
    """The course files, as a task's result: Dask moves them to each worker once."""
    return course


def grade_on_worker(course: CourseFiles, task: SubmissionTask) -> dict:
    """One Dask task: grade one submission in the worker's own local folder. The answer is plain
    data (``graded_as_data``; a refusal too), not objects of the worker's making."""
    from distributed import get_worker

    local = Path(get_worker().local_directory)
    work = Path(tempfile.mkdtemp(prefix=f"coursekit-{task.student[:40]}-", dir=local))
    try:
        return graded_as_data(submission.grade_submission(course, task, work))
    except Refused as err:
        return {"refused": str(err)}


# --- what a worker sends back: plain data, checked ----------------------------------------------

GRADED_FIELDS = {field.name for field in dataclasses.fields(Graded)}
EVENT_KEYS = {"kind", "message", "cwd", "reason"}
ROW_TYPES = {bool: (bool,), int: (int,), float: (int, float), str: (str,), datetime.datetime: (datetime.datetime,),
             datetime.timedelta: (datetime.timedelta,)}


class MalformedAnswer(ValueError):
    """A worker's answer that is not what ``grade_on_worker`` sends: it is not used."""


def graded_as_data(graded: Graded) -> dict:
    """``Graded`` as a dict of str, int, float, bytes, lists and dicts (and the gradebook's
    datetimes), as ``graded_from_data`` accepts it."""
    return dataclasses.asdict(graded)


def graded_from_data(answer, student: str) -> Graded | Refused:
    """The runner's side of ``graded_as_data``: the answer for ``student``'s task, field by field
    of the type the runner uses, the gradebook rows only in the submission's tables and columns;
    anything else raises ``MalformedAnswer`` (that submission fails, nothing of it is written)."""
    if not isinstance(answer, dict) or not all(isinstance(k, str) for k in answer):
        raise MalformedAnswer(f"the worker's answer is a {type(answer).__name__}, not the fields of a grading")
    if set(answer) == {"refused"} and isinstance(answer["refused"], str):
        return Refused(answer["refused"])
    if set(answer) != GRADED_FIELDS:
        raise MalformedAnswer(f"the worker's answer has the fields {sorted(answer)[:20]}, not {sorted(GRADED_FIELDS)}")
    _expect(answer, "student", str)
    if answer["student"] != student:
        raise MalformedAnswer(f"the worker answered for {answer['student'][:80]!r}, not for {student!r}")
    _expect(answer, "returncode", int)
    for name in ("log", "course_digest", "host"):
        _expect(answer, name, str)
    _expect(answer, "seconds", (int, float))
    _expect(answer, "archive", (bytes, type(None)))
    _expect(answer, "events", list)
    for event in answer["events"]:
        if not (isinstance(event, dict) and {"kind", "message"} <= set(event) <= EVENT_KEYS
                and all(isinstance(v, str) for v in event.values())):
            raise MalformedAnswer("the worker's sandbox events are not events")
    if answer["rows"] is not None:
        _check_rows(answer["rows"])
    return Graded(**answer)


def _expect(answer: dict, name: str, types) -> None:
    value = answer[name]
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise MalformedAnswer(f"the worker's {name} is a bool")
    if not isinstance(value, types):
        raise MalformedAnswer(f"the worker's {name} is a {type(value).__name__}")


def _check_rows(rows) -> None:
    """Gradebook rows of one submission: the tables ``gradebook.SUBMISSION``, each row's columns
    those of its table, each value of the column's type (or None)."""
    tables = gradebook.tables()
    if not isinstance(rows, dict) or not set(rows) <= set(gradebook.SUBMISSION):
        raise MalformedAnswer("the worker's gradebook rows are not the tables of a submission")
    for table, found in rows.items():
        columns = {column.name: column.type.python_type for column in tables[table].c}
        if not isinstance(found, list):
            raise MalformedAnswer(f"the worker's {table} rows are not a list")
        for row in found:
            if not isinstance(row, dict) or not set(row) <= set(columns):
                raise MalformedAnswer(f"a {table} row of the worker has columns that table does not have")
            for name, value in row.items():
                allowed = ROW_TYPES.get(columns[name], ())
                if value is not None and (not isinstance(value, allowed)
                                          or (isinstance(value, bool) and columns[name] is not bool)):
                    raise MalformedAnswer(f"the worker's {table}.{name} is a {type(value).__name__}")


def worker_refusal(settings: sandbox.Settings, client_environment: dict) -> str | None:
    """Run on every worker before grading: why it cannot grade as the runner would, or None. The
    same preflight as each submission's (``submission.worker_preflight``): its probe is kept by the
    worker's process, so the submissions graded there do not probe again."""
    return submission.worker_preflight(settings, client_environment)


async def _worker_refusal_in_thread(settings: sandbox.Settings, client_environment: dict) -> str | None:
    """``worker_refusal`` off the worker's event loop (starting a sandbox takes a moment)."""
    return await asyncio.get_running_loop().run_in_executor(None, worker_refusal, settings, client_environment)


class DaskPool:
    """Submissions graded as Dask tasks on the cluster of ``address``."""

    def __init__(self, address: str, workers_timeout: float = WORKERS_TIMEOUT, security=None):
        from distributed import Client, as_completed

        self.address = address
        # mutual TLS with the course's certificates (or the given ``security``'s), or a refusal
        # (ClusterSecurityError) before anything is sent
        self.security = scheduler_security(address) if security is None else security
        if insecure_scheduler_refusal(address) or not (self.security.require_encryption and self.security.tls_ca_file
                                                        and self.security.tls_client_cert):
            raise ClusterSecurityError(insecure_scheduler_refusal(address)
                                       or f"refusing the Dask scheduler {address}: a Security without mutual TLS")
        self.client = Client(address, timeout="30s", set_as_default=False, security=self.security)
        self.done = as_completed(loop=self.client.loop, with_results=False)
        self.pending: dict = {}
        self.course_future = None
        self.workers_timeout = workers_timeout

    def threads(self) -> int:
        return sum(self.client.nthreads().values())

    def describe(self) -> str:
        workers = self.client.nthreads()
        return f"{len(workers)} Dask worker{'s' * (len(workers) != 1)} ({self.threads()} threads) at {self.address}"

    def window(self) -> int:
        return max(1, TASKS_PER_THREAD * self.threads())

    def check(self, course: CourseFiles) -> None:
        """Refuse the run unless every connected worker can grade as this process would."""
        try:
            self.client.wait_for_workers(1, timeout=self.workers_timeout)
        except TimeoutError:
            raise submission.RunnerError(f"no Dask worker joined {self.address} within {self.workers_timeout:g} s") from None
        found = self.client.run(_worker_refusal_in_thread, course.sandbox, course.environment)
        refusals = [f"worker {address} {reason if isinstance(reason, str) else 'sent no refusal nor None'}"
                    for address, reason in sorted(found.items()) if reason is not None]
        if refusals:
            raise submission.RunnerError("\n".join(refusals))

    def submit(self, course: CourseFiles, task: SubmissionTask) -> None:
        if self.course_future is None:
            self.course_future = self.client.submit(_hold, course, key=f"coursekit-course-{uuid.uuid4().hex}",
                                                    pure=False)
        future = self.client.submit(grade_on_worker, self.course_future, task, pure=False,
                                    key=f"coursekit-grade-{task.student[:80]}-{uuid.uuid4().hex}")
        self.pending[future.key] = (future, task.student)
        self.done.add(future)

    def in_flight(self) -> int:
        return len(self.pending)

    def next_done(self) -> tuple[str, Graded | BaseException]:
        while True:
            future = next(self.done)
            if future.key in self.pending:  # not one that was cancelled
                break
        _, student = self.pending.pop(future.key)
        try:
            return student, graded_from_data(future.result(), student)
        except Refused as err:
            return student, err
        except Exception as err:  # noqa: BLE001 (e.g. KilledWorker: its workers died too often)
            return student, err

    def cancel(self) -> None:
        """Drop the tasks that have not started; those running finish and are kept."""
        for key, (future, student) in list(self.pending.items()):
            if future.status == "pending" and not self._processing(key):
                future.cancel()
                self.pending.pop(key)

    def _processing(self, key: str) -> bool:
        return any(key in keys for keys in self.client.processing().values())

    def stop(self) -> None:
        self.client.cancel([future for future, _ in self.pending.values()])
        self.pending.clear()

    def close(self) -> None:
        self.client.close()


# --- starting workers on a Slurm cluster ----------------------------------------------------------


def slurm_cluster(cores: int = 16, walltime: str = "04:00:00", queue: str | None = None,
                  account: str | None = None, python: str | None = None, tls_folder: Path = TLS_FOLDER, **kwargs):
    """A dask-jobqueue ``SLURMCluster`` whose jobs are grading nodes: one job per node (``--exclusive``),
    one worker process per core with one thread each (``submission.MEMORY_PER_WORKER`` of memory each),
    started as root through ``sudo -n`` (the sandbox gives each kernel a user id of its own, which
    only root can do; a worker that is not root refuses, and the runner stops). The nodes run the
    course's own virtual environment (the same requirements.lock and coursekit: checked) and need
    bubblewrap; course files are shipped by the runner, so no shared folder is needed.

        cluster = slurm_cluster(queue="grading"); cluster.scale(jobs=4)
        python -m coursekit.grading.runner week2 --scheduler <cluster.scheduler_address>   # tls://...

    Scheduler and workers use the course's certificates (``tls_folder``): the nodes need a copy of
    that folder at the same path, readable by root only.
    """
    from dask_jobqueue import SLURMCluster

    gb_per_worker = submission.MEMORY_PER_WORKER // submission.GB
    prologue = ["export TF_CPP_MIN_LOG_LEVEL=3"]
    if os.environ.get("COURSEKIT_DATA_DIR"):
        prologue.append(f"export COURSEKIT_DATA_DIR={os.environ['COURSEKIT_DATA_DIR']}")
    # The scheduler runs here with the scheduler's certificate; each job's workers get the TLS
    # options of the workers' one (the same folder must be on the nodes, see docs/operations.md).
    security = course_security(tls_folder, roles=ROLES)
    return SLURMCluster(
        cores=cores, processes=cores, memory=f"{cores * gb_per_worker}GiB", walltime=walltime, queue=queue,
        account=account, python=python or f"sudo -n --preserve-env {sys.executable}",
        job_extra_directives=["--exclusive"], job_script_prologue=prologue,
        worker_extra_args=["--local-directory", "/tmp/coursekit-dask"], security=security, protocol="tls://",
        **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coursekit.grading.cluster",
                                     description="The course's Dask certificates (docs/operations.md, 'Grading on a cluster').")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("certificates", help="make them if missing or expiring (bin/setup does); print their folder")
    options = sub.add_parser("tls-args", help="print the dask scheduler / dask worker options that use them")
    options.add_argument("role", choices=("scheduler", "worker"))
    args = parser.parse_args(argv)
    if args.command == "certificates":
        print(ensure_certificates(REPO_ROOT))
    else:
        print(" ".join(tls_args(args.role)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
