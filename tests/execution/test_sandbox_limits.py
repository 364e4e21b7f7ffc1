"""Limits that hold outside the kernel too (issue 25): what the grader's own processes hold of
what student code sends or writes is bounded.

- The sandbox wrapper (coursekit/execution/sandbox.py) runs as root, outside every limit of the sandbox,
  and relays the kernel's messages: a kernel that sends one message of many large parts must
  not make it hold them all. Shown with the real wrapper (this one, and the one before the
  fix, taken from git) around a fake kernel that speaks ZMTP with pyzmq, as ipykernel does.
- The student's outbox (coursekit/transfer/split_execute.py's transfer folder) is written by student
  code: it must be under the sandbox's quotas, not on the host's disk.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from history import old_source

from coursekit.execution import sandbox
from coursekit.core.course import REPO_ROOT

# The wrapper as it was before its relay counted a message's bytes as they arrive.
OLD_WRAPPER_COMMIT = "a538299"
LIMIT = "4M"              # the output budget, and what the new relay holds of one message
PARTS, PART_MB = 48, 2    # one message of 96 MB: far past the limit, in parts each under 64 MB

FAKE_KERNEL = r'''
import json, sys, time
import zmq

connection = json.load(open(sys.argv[sys.argv.index("-f") + 1]))
channel, parts, part_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
context = zmq.Context()
header = json.dumps({"msg_id": "m1", "msg_type": "display_data", "session": "s", "username": "u",
                     "version": "5.3", "date": "2026-01-01T00:00:00Z"}).encode()
content = json.dumps({"data": {"text/plain": "x"}, "metadata": {}}).encode()
blob = b"x" * part_bytes
if channel == "iopub":
    socket = context.socket(zmq.XPUB)
    socket.bind(f"ipc://{connection['ip']}-{connection['iopub_port']}")
    socket.recv()  # a subscription: the client listens
    route = [b"kernel.display_data"]
else:  # shell: a reply to the client's request
    socket = context.socket(zmq.ROUTER)
    socket.bind(f"ipc://{connection['ip']}-{connection['shell_port']}")
    route = socket.recv_multipart()[:1]
socket.send_multipart([*route, b"<IDS|MSG>", b"", header, b"{}", b"{}", content, *[blob] * parts])
time.sleep(120)
'''


def peak_rss(pid: int) -> int:
    """Bytes: the process's high-water mark of resident memory (VmHWM); 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def relay_one_large_message(tmp_path: Path, wrapper: list[str], channel: str = "iopub") -> tuple[int, list[dict], bool]:
    """Start ``wrapper`` around the fake kernel, receive what it relays of one 96 MB message of
    48 parts on ``channel``; (the wrapper's peak resident bytes, its events, whether the client
    got a message). The wrapper still runs at the end (and is then stopped), unless it stopped
    the kernel itself."""
    import zmq
    from jupyter_client.connect import write_connection_file

    work = tmp_path / "work"
    work.mkdir()
    (work / "fake_kernel.py").write_text(FAKE_KERNEL)
    connection, info = write_connection_file(str(tmp_path / "kernel.json"), ip="127.0.0.1", key=b"")
    events = tmp_path / "events.jsonl"
    settings = sandbox.Settings(output=LIMIT, wall_time=120)
    argv = [*wrapper, "--", sys.executable, "fake_kernel.py", channel, str(PARTS), str(PART_MB * 2**20), "-f", connection,
            *settings.kernel_arguments()]
    proc = subprocess.Popen(argv, cwd=work, env=dict(os.environ, **{sandbox.EVENTS_ENV: str(events)}),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    context = zmq.Context()
    client = context.socket(zmq.SUB if channel == "iopub" else zmq.DEALER)
    try:
        if channel == "iopub":
            client.setsockopt(zmq.SUBSCRIBE, b"")
        client.connect(f"tcp://127.0.0.1:{info[channel + '_port']}")
        if channel != "iopub":
            client.send_multipart([b"<IDS|MSG>", b"", b"{}", b"{}", b"{}", b"{}"])
        peak, received = 0, False
        deadline = time.monotonic() + (90 if channel == "iopub" else 30)
        while time.monotonic() < deadline and proc.poll() is None and not received:
            received = bool(client.poll(20))
            peak = max(peak, peak_rss(proc.pid))
        if received:
            client.recv_multipart()
            time.sleep(1.0)  # whatever the wrapper still does with the message
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        while proc.poll() is None and time.monotonic() < deadline:  # it relays nothing: the kernel stopped?
            peak = max(peak, peak_rss(proc.pid))
            if received:
                break
            time.sleep(0.02)
    finally:
        client.close(linger=0)
        context.term()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    found = [json.loads(line) for line in events.read_text().splitlines()] if events.is_file() else []
    return peak, found, bool(received)


@pytest.fixture
def needs_sandbox():
    if shutil.which("bwrap") is None or os.geteuid() != 0:
        pytest.skip("the sandbox needs bubblewrap and root")


def test_the_old_relay_holds_every_part_of_a_message_outside_every_limit(tmp_path, needs_sandbox):
    peak, _, received = relay_one_large_message(tmp_path, old_wrapper(tmp_path))
    assert received
    assert peak > PARTS * PART_MB * 2**20, f"the old wrapper peaked at {peak / 2**20:.0f} MB"


def old_wrapper(tmp_path: Path) -> list[str]:
    old = tmp_path / "old"
    old.mkdir()
    (old / "old_sandbox.py").write_text(old_source(OLD_WRAPPER_COMMIT, "coursekit/sandbox.py"))
    return [sys.executable, "-I", str(old / "old_sandbox.py")]


def test_the_old_relay_held_a_reply_of_many_parts_too(tmp_path, needs_sandbox):
    peak, _, received = relay_one_large_message(tmp_path, old_wrapper(tmp_path), channel="shell")
    assert received and peak > PARTS * PART_MB * 2**20, f"the old wrapper peaked at {peak / 2**20:.0f} MB"


def test_a_reply_past_the_limit_stops_the_kernel_and_is_recorded(tmp_path, needs_sandbox):
    peak, events, received = relay_one_large_message(tmp_path, [sys.executable, "-I", "-m", "coursekit.execution.sandbox"],
                                                     channel="shell")
    assert not received
    assert peak < 60 * 2**20 + 3 * sandbox.parse_size(LIMIT), f"the wrapper peaked at {peak / 2**20:.0f} MB"
    assert [(e["kind"], e.get("reason")) for e in events] == [("sandbox", "output")], events
    assert "grader holds" in events[0]["message"]


def test_the_relay_holds_no_more_of_a_message_than_the_output_limit(tmp_path, needs_sandbox):
    peak, events, received = relay_one_large_message(tmp_path, [sys.executable, "-I", "-m", "coursekit.execution.sandbox"])
    assert received  # the budget's notice stands for the message
    limit = sandbox.parse_size(LIMIT)
    assert peak < 60 * 2**20 + 3 * limit, f"the wrapper peaked at {peak / 2**20:.0f} MB"
    assert [(e["kind"], e.get("reason")) for e in events] == [("sandbox", "output")], events


# --- the student's outbox ---------------------------------------------------------------------------

OUTBOX_DISK, OUTBOX_FILES = "40M", 400
FILL_OUTBOX = r'''
import glob, json, os
outbox = glob.glob("/tmp/coursekit-split-*/student")[0]
report = {"written_mb": 0, "disk_error": None, "files": 0, "files_error": None}
try:
    with open(os.path.join(outbox, "fill"), "wb") as f:
        for _ in range(120):
            f.write(b"x" * 2**20)
            f.flush()
            report["written_mb"] += 1
except OSError as err:
    report["disk_error"] = err.strerror
os.remove(os.path.join(outbox, "fill"))
try:
    for n in range(800):
        open(os.path.join(outbox, f"f{n}"), "w").close()
        report["files"] += 1
except OSError as err:
    report["files_error"] = err.strerror
st = os.statvfs(outbox)
report["outbox_mb"] = st.f_blocks * st.f_frsize // 2**20
print("REPORT", json.dumps(report))
'''


def fill_the_outbox(tmp_path) -> dict:
    """Grade one answer cell that writes 120 MB and 800 files into its outbox, as the course
    does (SplitExecute, real sandbox), under a quota of 40 MB and 400 files."""
    from nbformat.v4 import new_code_cell, new_notebook
    from traitlets.config.loader import PyFileConfigLoader

    from coursekit.transfer.split_execute import SplitExecute

    config = PyFileConfigLoader("nbgrader_config.py", path=str(REPO_ROOT)).load_config()
    config.Execute.timeout = 120
    config.Execute.extra_arguments = sandbox.Settings(disk=OUTBOX_DISK, files=OUTBOX_FILES).kernel_arguments()
    folder = tmp_path / "work"
    folder.mkdir()
    nb = new_notebook(cells=[new_code_cell(FILL_OUTBOX)])
    nb, _ = SplitExecute(config=config).preprocess(nb, {"metadata": {"path": str(folder)}})
    printed = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.output_type == "stream")
    assert "REPORT" in printed, nb.cells[0].outputs
    return json.loads(printed.split("REPORT", 1)[1])


def test_the_old_outbox_was_the_hosts_disk_outside_every_quota(tmp_path, needs_sandbox, monkeypatch):
    monkeypatch.setattr(sandbox, "mount_outbox", lambda folder, settings: None)  # the layout before issue 25
    report = fill_the_outbox(tmp_path)
    assert report["written_mb"] == 120 and report["disk_error"] is None
    assert report["files"] == 800 and report["files_error"] is None
    assert report["outbox_mb"] > 1000  # the host's file system


def test_the_outbox_is_under_the_sandboxs_quotas(tmp_path, needs_sandbox):
    report = fill_the_outbox(tmp_path)
    assert report["outbox_mb"] == 40
    assert report["written_mb"] <= 40 and report["disk_error"] == "No space left on device"
    assert report["files"] < OUTBOX_FILES and report["files_error"] == "No space left on device"
