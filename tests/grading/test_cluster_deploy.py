"""The Slurm job script that coursekit.grading.cluster.slurm_cluster makes with dask-jobqueue (no Slurm
needed to generate it): each job is one grading node, with what the sandbox needs, and its
workers join only with the course's certificates (mutual TLS)."""

from __future__ import annotations

import re
import sys

import pytest

from coursekit.grading import cluster as coursecluster
from coursekit.grading import runner
from coursekit.grading.cluster import slurm_cluster


@pytest.fixture
def job_script(monkeypatch):
    monkeypatch.setenv("COURSEKIT_DATA_DIR", "/srv/course-data")
    cluster = slurm_cluster(cores=16, walltime="02:00:00", queue="grading", account="cs101",
                            tls_folder=coursecluster.ensure_certificates(),
                            scheduler_options={"host": "127.0.0.1", "dashboard_address": ":0"})
    try:
        yield cluster.job_script(), cluster.scheduler_address
    finally:
        cluster.close()


def test_one_node_per_job_one_thread_per_worker_process(job_script):
    script, _ = job_script
    directives = re.findall(r"^#SBATCH (.+)$", script, re.M)
    assert {"-p grading", "-A cs101", "-n 1", "--cpus-per-task=16", "-t 02:00:00", "--exclusive"} <= set(directives)
    (worker,) = [line for line in script.splitlines() if "distributed.cli.dask_worker" in line]
    args = worker.split()
    assert args[args.index("--nworkers") + 1] == "16" and args[args.index("--nthreads") + 1] == "1"
    assert "--nanny" in args  # a worker process that dies is started again on the node


def test_memory_per_worker_fits_a_training_submission(job_script):
    script, _ = job_script
    (mem,) = re.findall(r"^#SBATCH --mem=(\d+)G$", script, re.M)
    assert int(mem) >= 16 * runner.MEMORY_PER_WORKER // runner.GB
    (limit,) = re.findall(r"--memory-limit (\S+)GiB", script)
    assert float(limit) >= runner.MEMORY_PER_WORKER / runner.GB


def test_workers_run_as_root_in_the_course_environment(job_script):
    """The sandbox needs root (a user id per kernel); the worker runs the course's Python, which
    the runner checks against its own, and finds the data sets where the client's do."""
    script, address = job_script
    (worker,) = [line for line in script.splitlines() if "distributed.cli.dask_worker" in line]
    assert worker.startswith(f"sudo -n --preserve-env {sys.executable} -m distributed.cli.dask_worker {address} ")
    assert "export COURSEKIT_DATA_DIR=/srv/course-data" in script
    assert "export TF_CPP_MIN_LOG_LEVEL=3" in script
    assert "--local-directory /tmp/coursekit-dask" in worker


def test_workers_and_scheduler_use_the_course_certificates(job_script):
    """The scheduler dask-jobqueue starts here listens on TLS only, and each job's workers carry
    the workers' certificate of the course (the same folder on the nodes): without it a worker
    cannot join, and nobody without a course certificate can talk to the workers."""
    script, address = job_script
    assert address.startswith("tls://")
    (worker,) = [line for line in script.splitlines() if "distributed.cli.dask_worker" in line]
    args = worker.split()
    assert args[args.index("--protocol") + 1] == "tls://"
    files = coursecluster.certificate_files(coursecluster.TLS_FOLDER)
    assert args[args.index("--tls-ca-file") + 1] == str(files["ca"])
    assert args[args.index("--tls-cert") + 1] == str(files["worker"])
    assert args[args.index("--tls-key") + 1] == str(files["worker-key"])
    assert "-----BEGIN" not in script  # paths to the keys, never the keys themselves
