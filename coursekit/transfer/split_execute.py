"""Check cells that student code cannot reach: every check cell runs outside the student's kernel.

``SplitExecute`` replaces nbgrader's ``Execute`` preprocessor for the course (``nbgrader_config.py``,
section "Split execution": ``nbgrader autograde`` and ``nbgrader validate``). For each notebook it
starts two kernels:

- the **student's kernel** (``week2-grader``, sandboxed as before) runs every cell that is not a
  check cell: answers, the set-up cell, the instructor's helper cells;
- the **checker kernel** (``week2-checker``, a sandbox of its own) runs every check cell (a code
  cell with nbgrader ``grade`` and not ``solution``), public and hidden parts, and never runs
  student code. During ``autograde`` a cell is run there only if its source is the gradebook's
  source for its grade id (nbgrader's OverwriteCells restored it), so a cell a student marked
  as a check never reaches the checker.

nbclient records each cell as usual (outputs, errors, tracebacks, time limits): for a check cell
the client it talks to is the checker's, so nbgrader's verdict for that cell is the checker's.

The constants a read-only cell sets (``EPOCHS = 5`` in the set-up cell: a name bound to a literal
at the cell's top level) are the checker's own too: it binds them from the gradebook's source of
that cell, so a student who rebinds ``EPOCHS`` changes what their code does, not what the check
expects.

Before a check cell, the names it reads (the AST's free names, and the names its
``checks.expect_names`` line lists, minus what the checker provides itself: its preamble, the
read-only cells' constants, the names check cells assign, builtins) are exported by the student's kernel as data
(coursekit/transfer/export.py) into a transfer folder, and loaded into the checker (coursekit/transfer/checker.py),
which decodes them strictly (coursekit/transfer/wire.py). A student function the check calls is a proxy:
the checker asks this process over a Unix socket, this process runs the function in the
student's kernel (coursekit/transfer/export.py, ``serve_call``) and the checker reads back the data.

The transfer folder of a notebook (a fresh temporary folder of the grader) holds:

- ``student/``: written by the student's kernel only (read-write in its sandbox, read-only in
  the checker's): exported values and call results. It is a tmpfs of its own, under the
  sandbox's quotas of disk and files (and counted in its memory): student code writes there,
  and a plain folder would be the grader's disk, outside every quota;
- ``checker/``: written by the checker only (read-write in its sandbox, read-only in the
  student's): arguments of calls to student functions;
- ``call/``: the Unix socket this process serves, mounted in the checker's sandbox only;
- ``checker-cwd/``: the checker's (empty) working directory;
- ``events.jsonl``: where both kernels' sandbox wrappers note their stops (memory, wall time,
  output budget, protocol), the grader's alone.

Stops are the grader's knowledge, never read back from what a cell printed: this preprocessor
notes a cell the time limit interrupted, a check whose checker died, and the wrapper stops
that came while a cell ran (from ``events.jsonl``), and hands them on in ``resources``
(``coursekit.core.notebook.STOPS_RESOURCE``) to coursekit.submissions.sanitize, which records them and marks
their cells in the graded notebook (``coursekit.core.notebook.stopped_cells`` reads the marks).
A student's ``raise TimeoutError(...)`` or printed "The sandbox stopped the kernel" is an
ordinary error or output of their cell.

Requests to the student's kernel are silent executions (not stored in its history); each is
bounded by the cell's time limit, and a student kernel that does not answer in time is
interrupted: the check that needed it fails with the reason, never the grader. What the student's
kernel sees of a check: the names it reads and the arguments it passes to the student's functions.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import json
import os
import re
import signal
import tempfile
from pathlib import Path
from queue import Empty
from time import monotonic

from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import ensure_async, run_sync
from nbclient.client import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode
from nbgrader.preprocessors import Execute
from traitlets import Bool, Unicode

from coursekit.execution import sandbox
from coursekit.core.notebook import KILLING_STOPS, STOPS, STOPS_RESOURCE, grade_id, is_check_cell, is_readonly
from coursekit.execution.kernel import CHECKER_KERNEL

DEFAULT_PREAMBLE = ("import numpy as np\n"
                    "from coursekit.student import checks\n"
                    "from coursekit.student.datasets import load_fashion_mnist, load_mnist\n")
CHECKER_MODULE = "__coursekit_checker__"
# Decoding one check's values in the checker is bounded by the data limits of coursekit/transfer/wire.py
# (1.5 GB), not by the student: give it at least this long even when the cell's limit is shorter.
LOAD_TIMEOUT = 300.0
CALL_MARGIN = 2.0  # s left to the checker, after a call to a student function timed out, to fail cleanly
MAX_REQUEST_LINE = 4096
STOP_GRACE = 5.0  # s a terminated kernel's sandbox has to clean up before it is killed
FUNCTION_REFERENCE = re.compile(r"f[0-9]{1,9}")
CALL_ID = re.compile(r"c[0-9]{1,9}")
# Names IPython puts in a kernel's builtins.
KERNEL_BUILTINS = {"get_ipython", "display", "__IPYTHON__", "exit", "quit"}


def _error_output(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


class CheckerFailed(RuntimeError):
    """The checker kernel could not be started or set up: a problem of the grader, not of the
    submission."""


# --- which names a check cell reads --------------------------------------------------------------


def parse_cell(source: str) -> ast.Module | None:
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        source = TransformerManager().transform_cell(source)
    except Exception:
        pass
    try:
        return ast.parse(source)
    except SyntaxError:
        return None


def names_assigned(source: str) -> set[str]:
    """Names a cell binds (assignments, imports, definitions, loop and comprehension variables)."""
    tree = parse_cell(source)
    found: set[str] = set()
    if tree is None:
        return found
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            found.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, ast.alias):
            found.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.arg):
            found.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            found.add(node.name)
    return found


def names_read(source: str) -> set[str]:
    """Names a cell loads, plus the names its ``expect_names(globals(), ...)`` calls list."""
    tree = parse_cell(source)
    found: set[str] = set()
    if tree is None:
        return found
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            found.add(node.id)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "expect_names":
            found.update(a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
    return found


def literal_constants(source: str) -> dict[str, str]:
    """name -> literal source of each ``NAME = <literal>`` statement at a cell's top level."""
    tree = parse_cell(source)
    found: dict[str, str] = {}
    for node in tree.body if tree is not None else []:
        if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                continue
            for target in node.targets:
                found[target.id] = repr(value)
    return found


def student_names(cell_source: str, provided: set[str]) -> list[str]:
    """The student's names a check cell reads: what it reads minus what the checker provides."""
    skip = provided | set(dir(builtins)) | KERNEL_BUILTINS | names_assigned(cell_source)
    return sorted(n for n in names_read(cell_source) - skip if n.isidentifier())


# --- the transfer folder --------------------------------------------------------------------------


TRANSFER_PREFIX = "coursekit-split-"  # <tmp>/coursekit-split-<grader pid>-<random>: one notebook's transfer folders


class Transfer:
    """The folders one notebook's two kernels exchange data through (see the module docstring)."""

    def __init__(self, settings: sandbox.Settings | None = None):
        """``settings``: the sandbox's, whose quotas the student's outbox gets (None: no sandbox)."""
        sandbox.sweep_leftovers(Path(tempfile.gettempdir()), TRANSFER_PREFIX)  # of killed graders
        self.root = Path(tempfile.mkdtemp(prefix=f"{TRANSFER_PREFIX}{os.getpid()}-"))
        self.student = self.root / "student"
        self.checker = self.root / "checker"
        self.call = self.root / "call"
        self.checker_cwd = self.root / "checker-cwd"
        self.events = self.root / "events.jsonl"
        for folder, mode in ((self.student, 0o755), (self.checker, 0o755), (self.call, 0o700), (self.checker_cwd, 0o700)):
            folder.mkdir()
            os.chmod(folder, mode)
        self.socket = self.call / "call.sock"
        if settings is not None and settings.enabled:
            try:
                sandbox.mount_outbox(self.student, settings)
            except sandbox.SandboxUnavailable as err:
                self.remove()
                raise SystemExit(sandbox.refusal(str(err))) from None

    def student_arguments(self) -> list[str]:
        return [sandbox.bind_argument("rw", self.student), sandbox.bind_argument("ro", self.checker),
                sandbox.events_argument(self.events)]

    def checker_arguments(self) -> list[str]:
        return [sandbox.bind_argument("ro", self.student), sandbox.bind_argument("rw", self.checker),
                sandbox.bind_argument("rw", self.call), sandbox.events_argument(self.events)]

    def remove(self) -> None:
        sandbox.remove_folder(self.root)  # the student's outbox is unmounted first


async def stop_kernel(km, log, grace: float = STOP_GRACE) -> None:
    """Stop a kernel whose work is done, at once: SIGTERM to its process group, on which the
    sandbox wrapper (coursekit/execution/sandbox.py) kills the kernel and removes its scratch folder. A
    shutdown request would wait for TensorFlow's own teardown (~1.4 s a kernel, two kernels a
    submission); SIGKILL would leave the scratch folder to the next wrapper's sweep."""
    try:
        if await ensure_async(km.is_alive()):
            await ensure_async(km.signal_kernel(signal.SIGTERM))
            deadline = monotonic() + grace
            while monotonic() < deadline and await ensure_async(km.is_alive()):
                await asyncio.sleep(0.02)
    except (RuntimeError, OSError) as err:  # already gone
        log.debug("kernel stop: %s", err)
    finally:
        try:
            if await ensure_async(km.is_alive()):  # it did not stop: kill what is left
                await ensure_async(km.shutdown_kernel(now=True))
        except Exception as err:  # already gone
            log.debug("kernel shutdown: %s", err)


# --- the preprocessor -------------------------------------------------------------------------------


class SplitExecute(Execute):
    """nbgrader's Execute, with check cells run in a checker kernel (see the module docstring)."""

    split = Bool(True, help="Run check cells in the checker kernel. False: every cell runs in the "
                            "student's kernel, as stock nbgrader does (student code can then change "
                            "the verdicts and read the hidden tests).").tag(config=True)
    checker_kernel_name = Unicode(CHECKER_KERNEL, help="Kernel that runs the check cells.").tag(config=True)
    checker_preamble = Unicode(DEFAULT_PREAMBLE, help="Code the checker runs before the first check cell; "
                               "the names it binds are the checker's own (never read from the "
                               "student's kernel).").tag(config=True)

    def preprocess(self, nb: NotebookNode, resources=None, km=None):
        self._stops = []  # (cell, key of STOPS), as the grader saw them
        if not self.split:  # (comparisons only: the time limit's stops are noted, not the sandbox's)
            nb, resources = super().preprocess(nb, resources, km)
            self._hand_on_stops()
            return nb, resources
        NotebookClient.__init__(self, nb, km)
        self.reset_execution_trackers()
        self._check_assign_resources(resources)
        run_sync(self._async_split_preprocess)()
        self.set_widgets_metadata()
        return self.nb, self.resources

    # -- the notebook --

    async def _async_split_preprocess(self) -> None:
        self._trusted, locked = self._gradebook_sources() or (None, None)
        check_sources = [c.source for c in self.nb.cells if self._runs_in_checker(c)]
        self._constants = self._readonly_constants(locked)
        self._provided = set(names_assigned(self.checker_preamble)) | set(self._constants) | {CHECKER_MODULE}
        for source in check_sources:
            self._provided |= names_assigned(source)
        self._transfer = Transfer(self._sandbox_settings())
        self._events_read = 0
        self._requests = 0
        self._cell_deadline = monotonic()
        self._checker_km = self._checker_kc = None
        base_arguments = list(self.extra_arguments)
        server = await asyncio.start_unix_server(self._serve_call, path=str(self._transfer.socket),
                                                 limit=MAX_REQUEST_LINE)
        os.chmod(self._transfer.socket, 0o666)  # its folder is the checker's alone
        try:
            self.extra_arguments = [*base_arguments, *self._transfer.student_arguments()]
            checker = asyncio.ensure_future(self._start_checker()) if check_sources else None
            try:
                async with self.async_setup_kernel():
                    self._student_km, self._student_kc = self.km, self.kc
                    info = await self.async_wait_for_reply(await ensure_async(self.kc.kernel_info()))
                    if info is not None:
                        self.nb.metadata["language_info"] = info["content"]["language_info"]
                    if checker is not None:
                        await checker
                        checker = None
                    for index, cell in enumerate(self.nb.cells):
                        if self._runs_in_checker(cell):
                            await self._run_check(cell, index)
                        elif is_check_cell(cell):
                            self._refuse(cell)
                        else:
                            await self.async_execute_cell(cell, index, execution_count=self.code_cells_executed + 1,
                                                          store_history=True)
                    await stop_kernel(self._student_km, self.log)  # every cell has run and been recorded
            finally:
                if checker is not None:
                    checker.cancel()
                await self._stop_checker()
        finally:
            self.extra_arguments = base_arguments
            server.close()
            self._hand_on_stops()
            self._transfer.remove()

    def _sandbox_settings(self) -> sandbox.Settings | None:
        """The sandbox's settings nbgrader passes to the kernels (None: none, or the sandbox is off)."""
        settings = sandbox.Settings.of_arguments(self.extra_arguments)
        return settings if settings is not None and settings.enabled else None

    # -- stops: the grader's own knowledge, never the cells' outputs --

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        """nbclient's, then the sandbox's stops that came while the cell ran are the cell's."""
        try:
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        finally:
            if self.split:
                self._read_events(cell)

    async def _async_handle_timeout(self, timeout, cell=None):
        if cell is not None:
            self._note_stop(cell, "timeout")
        return await super()._async_handle_timeout(timeout, cell)

    def _note_stop(self, cell, reason: str) -> None:
        if reason in STOPS and not any(c is cell and r == reason for c, r in self._stops):
            self._stops.append((cell, reason))

    def _read_events(self, cell) -> None:
        """The stops the sandbox wrappers noted since the last look (written by them as root, in
        the grader's transfer folder: no kernel can write there)."""
        try:
            with open(self._transfer.events, "rb") as f:
                f.seek(self._events_read)
                data = f.read(1 << 20)
        except OSError:
            return
        complete = data[:data.rfind(b"\n") + 1]
        self._events_read += len(complete)
        for line in complete.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and isinstance(event.get("reason"), str):
                self._note_stop(cell, event["reason"])

    def _hand_on_stops(self) -> None:
        """Put the stops in ``resources`` as (cell index, reason), for coursekit.submissions.sanitize."""
        indexes = {id(c): i for i, c in enumerate(self.nb.cells)}
        found = self.resources.setdefault(STOPS_RESOURCE, [])
        for cell, reason in self._stops:
            if id(cell) in indexes and [indexes[id(cell)], reason] not in found:
                found.append([indexes[id(cell)], reason])

    def _gradebook_sources(self) -> tuple[dict[str, str], list[str]] | None:
        """During autograde, from the gradebook: grade id -> source of each check cell, and the
        sources of the other locked code cells. None without a gradebook (validate: the notebook
        is the instructor's, or the student's own)."""
        info = (self.resources or {}).get("nbgrader") or {}
        if not info.get("db_url"):
            return None
        from nbgrader.api import Gradebook

        with Gradebook(info["db_url"]) as gb:
            notebook = gb.find_notebook(info["notebook"], info["assignment"])
            sources = {c.name: c.source for c in notebook.source_cells if c.cell_type == "code"}
            graded = {c.name for c in notebook.grade_cells if c.cell_type == "code"}
            locked = [c.source for c in notebook.source_cells if c.cell_type == "code" and c.locked and c.name not in graded]
            return {name: sources[name] for name in graded if name in sources}, locked

    def _readonly_constants(self, locked_sources: list[str] | None) -> dict[str, str]:
        """The literal constants of the read-only cells that are not checks (see the module
        docstring): the gradebook's sources during autograde, else the notebook's cells."""
        if locked_sources is None:
            locked_sources = [c.source for c in self.nb.cells
                              if c.get("cell_type") == "code" and is_readonly(c) and not is_check_cell(c)]
        constants: dict[str, str] = {}
        for source in locked_sources:
            constants.update(literal_constants(source))
        return constants

    def _runs_in_checker(self, cell) -> bool:
        if not is_check_cell(cell):
            return False
        if self._trusted is None:
            return True
        gid = grade_id(cell)
        return gid in self._trusted and cell.source == self._trusted[gid]

    def _refuse(self, cell) -> None:
        """A cell marked as a check that is not one of the assignment's (never reached after
        nbgrader's OverwriteCells): it runs nowhere and scores nothing."""
        cell.outputs = [_error_output("CheckCellRefused", "this cell is not one of the assignment's checks: it was not run")]

    # -- the checker kernel --

    def create_kernel_manager(self):
        """The student's kernel, reached over Unix sockets in the transfer root (no TCP port to
        race for with other processes; the folder is the grader's alone)."""
        km = super().create_kernel_manager()
        if self.split:
            km.transport, km.ip = "ipc", str(self._transfer.root / "student-kernel")
        return km

    async def _start_checker(self, attempts: int = 3) -> None:
        # The student's kernel's sandbox settings, for the checker's own sandbox (not its binds).
        settings = sandbox.Settings.of_arguments(self.extra_arguments)
        options = settings.kernel_arguments() if settings is not None else []
        for attempt in range(1, attempts + 1):
            km = AsyncKernelManager(kernel_name=self.checker_kernel_name, config=self.config, transport="ipc",
                                    ip=str(self._transfer.root / f"checker-kernel{attempt}"))
            self._checker_km = km
            await km.start_kernel(extra_arguments=[*options, "--HistoryManager.hist_file=:memory:",
                                                   *self._transfer.checker_arguments()],
                                  cwd=str(self._transfer.checker_cwd))
            kc = km.client()
            kc.start_channels()
            try:
                await kc.wait_for_ready(timeout=self.startup_timeout)
                break
            except RuntimeError as err:
                self.log.warning("checker kernel did not start (attempt %d of %d): %s", attempt, attempts, err)
                self._checker_kc = kc
                await self._stop_checker()
                if attempt == attempts:
                    raise CheckerFailed(f"the checker kernel did not start: {err}") from err
        kc.allow_stdin = False
        self._checker_kc = kc
        t = self._transfer
        setup = (f"import coursekit.transfer.checker as {CHECKER_MODULE}\n"
                 f"{CHECKER_MODULE}.setup({str(t.student)!r}, {str(t.checker)!r}, {str(t.socket)!r}, globals())\n"
                 + self.checker_preamble
                 + "".join(f"{name} = {value}\n" for name, value in sorted(self._constants.items())))
        failure = await self._request(km, kc, setup, monotonic() + self.startup_timeout)
        if failure is not None:
            raise CheckerFailed(f"the checker kernel could not be set up: {failure}")

    async def _stop_checker(self) -> None:
        kc, km = self._checker_kc, self._checker_km
        self._checker_kc = self._checker_km = None
        if kc is not None:
            kc.stop_channels()
        if km is not None:
            await stop_kernel(km, self.log)
            await ensure_async(km.cleanup_resources())

    # -- one check cell --

    async def _run_check(self, cell, index: int) -> None:
        timeout = self._get_timeout(cell)
        names = student_names(cell.source, self._provided)
        self._requests += 1
        message = f"r{self._requests}"
        deadline = monotonic() + (timeout or 3600)
        failure = None
        if names:
            failure = await self._student_request(
                f"__import__('coursekit.transfer.export', fromlist=['export_values']).export_values("
                f"globals(), {names!r}, {str(self._transfer.student / message)!r})", deadline)
        load = f"{CHECKER_MODULE}.load({message!r}, {names!r}, {failure!r})"
        problem = await self._request(self._checker_km, self._checker_kc, load,
                                      monotonic() + max(timeout or 0, LOAD_TIMEOUT))
        if problem is not None:  # the grader's side failed (it is bounded by the data limits): say so, go on
            self.log.error("checker: could not load the values of %s: %s", grade_id(cell), problem)
            self.code_cells_executed += 1
            cell.execution_count = self.code_cells_executed
            cell.outputs = [_error_output("CheckerError", f"the grader could not prepare this check ({problem})")]
            await self._stop_checker()
            await self._start_checker()
            return
        student = (self.km, self.kc)
        self.km, self.kc = self._checker_km, self._checker_kc
        self._cell_deadline = monotonic() + (timeout or 3600)
        try:
            await self.async_execute_cell(cell, index, execution_count=self.code_cells_executed + 1, store_history=True)
        except DeadKernelError:
            cell.outputs.append(_error_output("DeadKernelError", "the checker stopped while running this check"))
            if not any(c is cell and r in KILLING_STOPS for c, r in self._stops):
                self._note_stop(cell, "dead-kernel")  # no wrapper said why
            self.km, self.kc = student
            await self._stop_checker()
            await self._start_checker()
        finally:
            self.km, self.kc = student

    # -- requests to a kernel, silent (not in its history, outputs not recorded) --

    async def _request(self, km, kc, code: str, deadline: float) -> str | None:
        """None when ``code`` ran; otherwise why not (error, time limit, kernel gone)."""
        msg_id = kc.execute(code, silent=True, store_history=False, allow_stdin=False, stop_on_error=False)
        while True:
            remaining = deadline - monotonic()
            if remaining <= 0:
                await ensure_async(km.interrupt_kernel())
                return "it did not answer within the time limit"
            try:
                msg = await ensure_async(kc.shell_channel.get_msg(timeout=min(1.0, remaining)))
            except Empty:
                if not await ensure_async(km.is_alive()):
                    return "its kernel stopped (it may have used too much memory)"
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            content = msg.get("content", {})
            if content.get("status") == "ok":
                return None
            return f"{content.get('ename', 'error')}: {str(content.get('evalue', ''))[:300]}"

    async def _student_request(self, code: str, deadline: float) -> str | None:
        failure = await self._request(self._student_km, self._student_kc, code, deadline)
        if failure is None:
            return None
        return f"your notebook's kernel could not hand it over ({failure})"

    async def _serve_call(self, reader, writer) -> None:
        """One call of a student function, asked by the checker: run it in the student's kernel."""
        try:
            try:
                request = json.loads(await reader.readline())
            except (ValueError, asyncio.LimitOverrunError):
                request = {}
            call, function = request.get("call"), request.get("function")
            if not (isinstance(call, str) and CALL_ID.fullmatch(call) and isinstance(function, str)
                    and FUNCTION_REFERENCE.fullmatch(function)):
                reply = {"status": "refused", "reason": "malformed request"}
            else:
                code = (f"__import__('coursekit.transfer.export', fromlist=['serve_call']).serve_call(globals(), {function!r}, "
                        f"{str(self._transfer.checker / call)!r}, {str(self._transfer.student / call)!r})")
                failure = await self._student_request(code, self._cell_deadline - CALL_MARGIN)
                reply = {"status": "ok"} if failure is None else {"status": "failed", "reason": failure}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError) as err:
            self.log.debug("checker call: %s", err)
        finally:
            writer.close()

