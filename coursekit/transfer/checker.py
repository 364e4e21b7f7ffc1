"""The checker kernel's side: the student's values bound as data, and student functions as proxies.

The checker is an IPython kernel that runs check cells only (coursekit/transfer/split_execute.py). Before
each check cell the orchestrator runs ``load(...)`` here, silently: it decodes, strictly
(coursekit/transfer/wire.py), the message the student's kernel wrote, and binds each value the cell
reads in this kernel's namespace: a name the student's notebook does not define is unbound,
so ``checks.expect_names`` says so; a value that could not be read is an UnreadableValue,
which fails the check that uses it with the reason.

A student function arrives as a ``StudentFunction``. Calling it writes the arguments into this
kernel's own folder, asks the orchestrator over a Unix socket that only this kernel can reach
to run the function in the student's kernel, and reads back, as data, the result (or the
exception, raised here again), what the function printed, and the arguments it changed in
place (written back into the caller's arrays and lists, so "augment should not change its
input" is still checked). The call is bounded by the cell's time limit.
"""

from __future__ import annotations

import builtins
import itertools
import json
import os
import socket
import sys
from pathlib import Path

import numpy as np

from coursekit.transfer import wire
from coursekit.student.values import UnreadableValue

_session: "Session | None" = None


class StudentCodeError(Exception):
    """The student's function raised an exception that is not one of Python's own."""


class Session:
    def __init__(self, student_dir: str, checker_dir: str, socket_path: str, namespace: dict):
        self.student_dir = student_dir
        self.checker_dir = Path(checker_dir)
        self.socket_path = socket_path
        self.namespace = namespace
        self.student_fd = wire.open_base(student_dir)
        self.cache: dict = {}
        self.calls = itertools.count()
        self.loaded: set[str] = set()

    # --- values before a check cell -----------------------------------------------------

    def load(self, message: str, names: list[str], failure: str | None = None) -> None:
        for name in self.loaded - set(names):  # a check sees only the names it reads
            self.namespace.pop(name, None)
        self.loaded = set(names)
        values = {}
        if failure is None:
            try:
                values = self._decode(message, names)
            except wire.WireError as err:
                failure = str(err)
        if failure is not None:
            values = {name: UnreadableValue(name, failure) for name in names}
        for name in names:
            if name in values:
                self.namespace[name] = values[name]
            else:
                self.namespace.pop(name, None)

    def _decode(self, message: str, names: list[str]) -> dict:
        # arrays kept from earlier messages: a large array the student's kernel did not send again
        manifest, reader = wire.read_message(self.student_fd, message, self.function, cache=self.cache)
        try:
            nodes = manifest.get("values")
            missing = manifest.get("missing")
            if not isinstance(nodes, dict) or not isinstance(missing, list):
                raise wire.WireError("the answer is not a list of values")
            values = wire.decode_named(reader, nodes, names)
        finally:
            reader.close()
        # keep only the large arrays this message used: memory stays bounded by one check's values
        self.cache = {k: v for k, v in reader.arrays_read.items() if v.nbytes >= wire.REUSE_MIN_BYTES}
        return values

    def function(self, reference: str, source: str | None = None, module: str | None = None) -> "StudentFunction":
        return StudentFunction(self, reference, source, module)

    # --- calls during a check cell ------------------------------------------------------

    def call(self, reference: str, args: tuple, kwargs: dict):
        message = f"c{next(self.calls)}"
        writer = wire.Writer(self.checker_dir / message,
                             convert=lambda v, d: ("function", v.reference) if isinstance(v, StudentFunction) else None)
        writer.write({"args": [writer.encode(a) for a in args],
                      "kwargs": {str(k): writer.encode(v) for k, v in kwargs.items()}})
        reply = self._ask({"call": message, "function": reference})
        if reply.get("status") != "ok":
            from coursekit.student.checks import CheckFailed

            raise CheckFailed(f"calling your function did not work: {reply.get('reason', 'no answer')}",
                              hint="the function should return without waiting for input or looping forever")
        manifest, reader = wire.read_message(self.student_fd, message, self.function)
        try:
            return self._outcome(manifest, reader, args, kwargs)
        finally:
            reader.close()

    def _ask(self, request: dict) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(self.socket_path)
            conn.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        try:
            reply = json.loads(data or b"{}")
        except ValueError:
            reply = {}
        return reply if isinstance(reply, dict) else {}

    def _outcome(self, manifest: dict, reader: wire.Reader, args: tuple, kwargs: dict):
        for stream, target in (("stdout", sys.stdout), ("stderr", sys.stderr)):
            text = manifest.get(stream)
            if isinstance(text, str) and text:
                target.write(text[:200_000])
                target.flush()
        changed = manifest.get("changed") if isinstance(manifest.get("changed"), dict) else {}
        for index, node in changed.items():
            if index.isdigit() and int(index) < len(args):
                _write_back(args[int(index)], reader, node)
        changed_kwargs = manifest.get("changed_kwargs") if isinstance(manifest.get("changed_kwargs"), dict) else {}
        for key, node in changed_kwargs.items():
            if key in kwargs:
                _write_back(kwargs[key], reader, node)
        error = manifest.get("error")
        if error is not None:
            raise _student_exception(error)
        try:
            return reader.value(manifest.get("result"))
        except wire.WireError as err:
            return UnreadableValue("the function's result", str(err))


def _write_back(original, reader: wire.Reader, node) -> None:
    try:
        new = reader.value(node)
    except wire.WireError:
        return
    if isinstance(original, np.ndarray) and isinstance(new, np.ndarray):
        if new.shape == original.shape and original.flags.writeable:
            original[...] = new.astype(original.dtype, copy=False)
    elif isinstance(original, list) and isinstance(new, list):
        original[:] = new
    elif isinstance(original, dict) and isinstance(new, dict):
        original.clear()
        original.update(new)


def _student_exception(error) -> BaseException:
    if not isinstance(error, dict):
        return StudentCodeError("your function failed")
    name = str(error.get("type", "Exception"))[:100]
    message = str(error.get("message", ""))[:2000]
    kind = getattr(builtins, name, None) if error.get("builtin") else None
    if isinstance(kind, type) and issubclass(kind, Exception):
        try:
            return kind(message) if message else kind()
        except Exception:
            pass
    return StudentCodeError(f"{name}: {message}" if message else name)


class StudentFunction:
    """A function of the student's notebook, called in the student's kernel."""

    def __init__(self, session: Session, reference: str, source: str | None = None, module: str | None = None):
        self._session = session
        self.reference = reference
        # Its source text and module as the student's kernel sent them: data for the checks that
        # read how a function is written (checks.expect_numpy_only parses it; nothing runs it).
        self.source, self.module = source, module

    def __call__(self, *args, **kwargs):
        return self._session.call(self.reference, args, kwargs)

    def __repr__(self) -> str:
        return "<function of your notebook>"


def setup(student_dir: str, checker_dir: str, socket_path: str, namespace: dict) -> None:
    global _session
    _session = Session(student_dir, checker_dir, socket_path, namespace)


def load(message: str, names: list[str], failure: str | None = None) -> None:
    _session.load(message, names, failure)
