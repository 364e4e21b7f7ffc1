"""Where the data sets are: the one look-up shared by the loaders (``coursekit.student.datasets``) and
the sandbox (``coursekit.execution.sandbox``), which mounts exactly these folders, read-only, for student
code. The two must agree, or a sandboxed check could not load the data its notebook loaded.

Folders searched for ``<name>/<file>``, first hit wins (``coursekit.student.datasets`` then falls back
to Keras' own download):

1. ``$COURSEKIT_DATA_DIR`` when it is set; otherwise the offline mirror ``../shared/data``
   beside the repository, when there is one (course machines and CI have it);
2. the repository's own ``data/`` folder (``data/README.md``).

Decoded copies are cached under ``$COURSEKIT_CACHE_DIR`` (default ``<repository>/.cache/datasets``).

Installed from the students' wheel (``coursekit.hosting.student_wheel``), site-packages is no course
repository: only ``$COURSEKIT_DATA_DIR`` is searched, and the cache goes to the user's
``~/.cache/coursekit/datasets``.

Standard library only: the sandbox wrapper imports this once per notebook graded.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
DATA_DIR_ENV = "COURSEKIT_DATA_DIR"
CACHE_DIR_ENV = "COURSEKIT_CACHE_DIR"
MIRROR = REPO_ROOT.parent / "shared" / "data"
# False when installed from the students' wheel, whose __init__ says so: site-packages is no
# course repository. (Not a look for the repository's files: the grading sandbox mounts only the
# package and the data folders, so the repository looks absent from inside it.)
IN_CHECKOUT = not getattr(sys.modules["coursekit"], "STUDENT_PACKAGE", False)
COURSE_DATA_DIR = REPO_ROOT / "data"
DEFAULT_CACHE_DIR = (REPO_ROOT / ".cache" / "datasets" if IN_CHECKOUT else
                     Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "coursekit" / "datasets")


def data_dirs() -> list[Path]:
    """The folders searched for data, in order."""
    chosen = os.environ.get(DATA_DIR_ENV)
    dirs = []
    if chosen:
        dirs.append(Path(chosen).expanduser())
    elif IN_CHECKOUT and MIRROR.is_dir():
        dirs.append(MIRROR)
    if IN_CHECKOUT:
        dirs.append(COURSE_DATA_DIR)
    return dirs


def cache_dir() -> Path:
    """Where verified, decoded arrays are cached."""
    return Path(os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR)


def readable() -> list[Path]:
    """Everything a notebook's data loading reads: the data folders, then the cache."""
    return [*data_dirs(), cache_dir()]
