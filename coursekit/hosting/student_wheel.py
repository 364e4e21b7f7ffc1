"""The students' package: the part of coursekit that the released notebooks import, as a wheel.

A student's kernel (on the course JupyterHub, on their own machine, on Colab) needs
``coursekit.student.datasets`` (the checksum-verified data loaders) and ``coursekit.student.checks`` (the
helpers the public check cells call), and nothing else of this repository: not the grading
modules, not ``source/`` (solutions, hidden tests, mark schemes), not the tests and their
solved reference submissions. This module builds a wheel, distribution ``coursekit-student``,
import package ``coursekit``, holding exactly those two modules and a package docstring of its
own, with the standard build backend (setuptools, through ``pip wheel``):

    python -m coursekit.hosting.student_wheel          # -> build/student-wheel/coursekit_student-<version>-py3-none-any.whl

Students install it with one command (docs/operations.md, "Running the course on JupyterHub"):
``pip install "coursekit_student-<version>-py3-none-any.whl[tensorflow]"`` on their own
machine, without ``[tensorflow]`` on Colab, which has TensorFlow. ``bin/setup`` builds it and
installs it into the hub's environment (``coursekit/hosting/hub.py``). The build refuses a student
module that imports any other part of coursekit, so a later edit cannot pull a grading module
into the students' hands unnoticed.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGE_DIR = REPO_ROOT / "coursekit"
DEFAULT_OUT = REPO_ROOT / "build" / "student-wheel"
DIST_NAME = "coursekit-student"
# The wheel is the students' subpackage, whole (every module in coursekit/student/), and the
# public names the released notebooks import (`from coursekit import checks`, `from coursekit.datasets
# import ...`): coursekit/<name>.py for each name in coursekit.student.PUBLIC_NAMES.
STUDENT_DIR = PACKAGE_DIR / "student"
# Zip timestamps: the same sources give the same wheel, byte for byte.
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest a zip file can say

INIT = '''"""Week 2 of the TensorFlow course, the students' part: data loaders and check helpers.

- ``coursekit.datasets``: Fashion-MNIST and MNIST as ``tf.keras.datasets`` returns them, read
  from ``$COURSEKIT_DATA_DIR`` when the course provides the files, else downloaded by Keras;
  either way verified against the published SHA-256 checksums.
- ``coursekit.checks``: the helpers that the notebooks' check cells call.
Both live in ``coursekit.student`` (with what they read a model or a figure through).
"""

STUDENT_PACKAGE = True  # no course repository around it (coursekit.student.datapaths)
'''

PYPROJECT = '''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "{version}"
description = "Week-2 TensorFlow course, students' part: checksum-verified data loaders and the notebooks' check helpers"
requires-python = ">=3.10"
dependencies = ["numpy>=1.26", "matplotlib>=3.7"]

[project.optional-dependencies]
# Colab and the course hub have TensorFlow already; on your own machine add [tensorflow].
tensorflow = ["tensorflow>=2.16"]

[tool.setuptools]
packages = ["coursekit", "coursekit.student"]
'''


class StudentWheelError(RuntimeError):
    pass


def project_version() -> str:
    match = re.search(r'^version\s*=\s*"([^"]+)"', (REPO_ROOT / "pyproject.toml").read_text(), re.M)
    if not match:
        raise StudentWheelError("no version in pyproject.toml")
    return match.group(1)


def coursekit_imports(source: str) -> set[str]:
    """The coursekit modules a module's source imports, as dotted names (``coursekit.student.values``)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("coursekit."))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "coursekit" or node.module.startswith("coursekit."):
                found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def sources() -> dict[str, Path]:
    """What the wheel ships, by path inside it: coursekit/student/ whole, and the public names."""
    from coursekit.student import PUBLIC_NAMES

    files = {f"coursekit/student/{p.name}": p for p in sorted(STUDENT_DIR.glob("*.py"))}
    files.update({f"coursekit/{name}.py": PACKAGE_DIR / f"{name}.py" for name in PUBLIC_NAMES})
    return files


def stage(target: Path) -> Path:
    """Write the wheel's source tree into ``target``: pyproject.toml and coursekit/."""
    for inside, path in sources().items():
        source = path.read_text()
        outside = {m for m in coursekit_imports(source) if not m.startswith("coursekit.student")}
        if outside:
            raise StudentWheelError(
                f"{inside} imports {', '.join(sorted(outside))}, which students do not get: "
                "the students' package imports only itself")
        (target / inside).parent.mkdir(parents=True, exist_ok=True)
        (target / inside).write_text(source)
    (target / "coursekit" / "__init__.py").write_text(INIT)
    (target / "pyproject.toml").write_text(PYPROJECT.format(name=DIST_NAME, version=project_version()))
    return target


def wheel_name(version: str | None = None) -> str:
    return f"{DIST_NAME.replace('-', '_')}-{version or project_version()}-py3-none-any.whl"


def build(out_dir: Path = DEFAULT_OUT, python: str = sys.executable) -> Path:
    """Build the wheel into ``out_dir`` (replacing an older one) and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="coursekit-student-") as tmp:
        src = stage(Path(tmp) / "src")
        dist = Path(tmp) / "dist"
        env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH, PIP_DISABLE_PIP_VERSION_CHECK="1")
        proc = subprocess.run(
            [python, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(dist), str(src)],
            capture_output=True, text=True, env=env, cwd=tmp)
        built = sorted(dist.glob("*.whl"))
        if proc.returncode != 0 or len(built) != 1:
            raise StudentWheelError(f"pip wheel failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        target = out_dir / built[0].name
        shutil.copyfile(built[0], target)
    for old in out_dir.glob("*.whl"):
        if old != target:
            old.unlink()
    return target


def inputs_digest() -> str:
    """What the wheel is made of: the students' modules, this builder and the version."""
    digest = hashlib.sha256(project_version().encode())
    for path in [Path(__file__), *sources().values()]:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def build_if_changed(out_dir: Path = DEFAULT_OUT) -> Path:
    """The wheel in ``out_dir``, built again only when its inputs changed (bin/setup)."""
    stamp, wheel = out_dir / ".inputs-sha256", out_dir / wheel_name()
    if wheel.is_file() and stamp.is_file() and stamp.read_text() == inputs_digest():
        return wheel
    wheel = build(out_dir)
    stamp.write_text(inputs_digest())
    return wheel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the students' coursekit wheel (data loaders and check helpers only).")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder for the wheel (default {DEFAULT_OUT})")
    parser.add_argument("--if-changed", action="store_true", help="keep the wheel that is there if its sources did not change")
    args = parser.parse_args(argv)
    try:
        print(build_if_changed(args.out) if args.if_changed else build(args.out))
    except StudentWheelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
