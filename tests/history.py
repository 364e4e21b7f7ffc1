"""Old code from git history, for the tests that show an attack doing damage with the old code.

The package moved into subpackages after some of those commits (coursekit/sandbox.py is now
coursekit/execution/sandbox.py): ``old_source`` reads a module as it was and points its imports of
other course modules at where they live now, so the old module runs against today's package.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = REPO_ROOT / "coursekit"


def _where_now() -> dict[str, str]:
    """Old flat module name -> its dotted name today (``sandbox`` -> ``coursekit.execution.sandbox``)."""
    found = {}
    for path in PACKAGE.glob("*/*.py"):
        if path.name != "__init__.py":
            found[path.stem] = f"coursekit.{path.parent.name}.{path.stem}"
    return found


def modernise(source: str) -> str:
    """``source``'s imports of flat coursekit modules, pointed at today's subpackages."""
    now = _where_now()
    names = "|".join(sorted(now, key=len, reverse=True))

    def from_import(m: re.Match) -> str:
        parts = [p.strip() for p in m.group("names").split(",") if p.strip()]
        return "; ".join(
            f"from {now[p.split(' as ')[0]].rpartition('.')[0]} import {p}" if p.split(" as ")[0] in now
            else f"from coursekit import {p}" for p in parts)

    source = re.sub(r"(?<![\w.])from coursekit import (?P<names>[A-Za-z_]\w*(?: as \w+)?(?:, *[A-Za-z_]\w*(?: as \w+)?)*)",
                    from_import, source)
    return re.sub(rf"\bcoursekit\.({names})\b", lambda m: now[m.group(1)], source)


def old_source(commit: str, path: str) -> str:
    """The file at ``path`` (as it was named then) in ``commit``, its course imports modernised."""
    source = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=REPO_ROOT, check=True, capture_output=True,
                            text=True).stdout
    return modernise(source) if path.endswith(".py") else source
