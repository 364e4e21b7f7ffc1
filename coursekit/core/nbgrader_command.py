"""``nbgrader``, as the course's own processes start it (the runner's workers, coursekit.core.course).

The very application of the ``nbgrader`` command, started without one optional import:
jsonschema (through nbformat) imports ``rfc3987_syntax`` when it is installed, to check the "iri"
string format, and that package builds a Lark parser of RFC 3987's grammar at import: 3.2 s of
every nbgrader start on the 2-core machine, once per graded submission
(``benchmarks/results/nbgrader_start.txt``). No schema nbgrader validates (nbformat's) uses a string
format; jsonschema goes on without the package, as it does where it is not installed. It stays
installed for the hub's Jupyter server (jupyter-events requires it).

    python -P -m coursekit.core.nbgrader_command autograde week2 --student alice
"""

from __future__ import annotations

import sys


def command() -> list[str]:
    """The argv prefix that runs nbgrader this way, with this environment's Python; ``-P``: the
    working directory (a course folder) is not on ``sys.path``, as for the ``nbgrader`` script."""
    return [sys.executable, "-P", "-m", "coursekit.core.nbgrader_command"]


def main() -> None:
    sys.modules.setdefault("rfc3987_syntax", None)  # its import raises ImportError: jsonschema skips "iri"
    from nbgrader.apps.nbgraderapp import main as nbgrader_main

    sys.argv[0] = "nbgrader"
    sys.exit(nbgrader_main())


if __name__ == "__main__":
    main()
