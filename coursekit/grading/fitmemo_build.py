"""The fit memo's trusted build: the solutions' fits recorded into the store grading reads.

``python -m coursekit.grading.fitmemo_build build [--if-changed]`` (bin/setup) runs the source notebooks exactly
as autograde runs a submission (split execution, in the sandbox), with coursekit.execution.fitmemo recording
each memoisable fit into a staging folder, then ``promote`` moves the entries into the store,
read-only to everyone but root. Only this trusted run writes the store; a student's kernel reads it
(coursekit/execution/fitmemo.py says what an entry is and when one is served).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from coursekit.student import datapaths
from coursekit.execution.fitmemo import FORMAT, MAX_ENTRY_BYTES, RECORD_ENV, SUFFIX, store_dir

# --- the trusted build -----------------------------------------------------------------------------


def promote(staging: Path, store: Path) -> list[str]:
    """Move staged entries into the store (the grader's, read-only in every sandbox)."""
    store.mkdir(parents=True, exist_ok=True)
    os.chmod(store, 0o755)
    moved = []
    for path in sorted(staging.glob("*" + SUFFIX)):
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_ENTRY_BYTES:
            continue
        data = path.read_bytes()
        target = store / path.name
        temporary = store / (path.name + ".part")
        temporary.write_bytes(data)
        os.chmod(temporary, 0o644)
        temporary.replace(target)
        moved.append(path.name)
    return moved


def build(assignment: str = "week2", store: Path | None = None, timeout: int = 1800,
          notebooks: list[Path] | None = None) -> list[str]:
    """Run the instructor's source notebooks as autograde runs a submission (split execution,
    sandboxed, the course's configuration), recording every memoisable fit; install the entries."""
    import shutil
    import tempfile

    import nbformat
    from traitlets.config.loader import PyFileConfigLoader

    from coursekit.execution import sandbox
    from coursekit.core.layout import CourseLayout
    from coursekit.transfer.split_execute import SplitExecute

    store = store or store_dir()
    source = CourseLayout.load(datapaths.REPO_ROOT).source(assignment)
    installed = []
    with tempfile.TemporaryDirectory(prefix="fitmemo-build-") as tmp:
        tmp = Path(tmp)
        staging = tmp / "staging"
        staging.mkdir()
        config = PyFileConfigLoader("nbgrader_config.py", path=str(datapaths.REPO_ROOT)).load_config()
        config.Execute.timeout = timeout
        config.Execute.extra_arguments = [*config.Execute.extra_arguments, sandbox.bind_argument("rw", staging)]
        previous = os.environ.get(RECORD_ENV)
        os.environ[RECORD_ENV] = str(staging)
        try:
            for notebook in notebooks or sorted(source.glob("*.ipynb")):
                work = tmp / "work" / notebook.stem
                shutil.copytree(notebook.parent, work, ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
                nb = nbformat.read(notebook, as_version=4)
                pp = SplitExecute(config=config)  # (preprocess reads extra_arguments from the config again)
                nb, _ = pp.preprocess(nb, {"metadata": {"path": str(work)}})
                for cell in nb.cells:  # what went wrong, for whoever runs the build
                    for output in cell.get("outputs", []):
                        text = output.get("text", "") if output.get("output_type") == "stream" else ""
                        if "fitmemo:" in text or output.get("output_type") == "error":
                            print(f"fitmemo: {notebook.name}: {text.strip() or output.get('ename')}: "
                                  f"{output.get('evalue', '')}"[:500], file=sys.stderr)
        finally:
            if previous is None:
                os.environ.pop(RECORD_ENV, None)
            else:
                os.environ[RECORD_ENV] = previous
        installed = promote(staging, store)
    return installed


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m coursekit.grading.fitmemo_build", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="record the source notebooks' fits into the store (trusted: run by bin/setup)")
    b.add_argument("--assignment", default="week2")
    b.add_argument("--if-changed", action="store_true",
                   help="do nothing when the store was built from these notebooks, packages and code")
    args = parser.parse_args(argv)
    store = store_dir()
    stamp = store / ".built-for"
    wanted = build_stamp(args.assignment)
    if args.if_changed and stamp.is_file() and stamp.read_text() == wanted:
        return 0
    if os.geteuid() != 0:  # the build runs the notebooks as autograde does: in the sandbox, as root
        print("fitmemo: not root: no fits recorded (grading trains every fit)", file=sys.stderr)
        return 0
    names = build(args.assignment)
    stamp.write_text(wanted)
    print(f"fitmemo: {len(names)} fit(s) of the source notebooks recorded into {store}")
    return 0


def build_stamp(assignment: str) -> str:
    """What the entries depend on besides the key (a changed one only makes them miss)."""
    from coursekit.execution import fastfit, fitmemo, kernel
    from coursekit.core.layout import CourseLayout

    h = hashlib.sha256(FORMAT)
    source = CourseLayout.load(datapaths.REPO_ROOT).source(assignment)
    for path in [*sorted(source.glob("*.ipynb")), datapaths.REPO_ROOT / "requirements.lock",
                 Path(__file__), *(Path(module.__file__) for module in (fitmemo, fastfit, kernel))]:
        h.update(path.name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b""))
    return h.hexdigest() + "\n"


if __name__ == "__main__":
    sys.exit(main())
