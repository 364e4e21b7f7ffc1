"""coursekit.core.nbgrader_command starts the very nbgrader of the ``nbgrader`` command, without
jsonschema's optional rfc3987_syntax (a 2.3 s import), and nbformat still validates notebooks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from coursekit.core import nbgrader_command

PROBE = ("import sys, runpy; sys.argv = ['nbgrader', '--version']\n"
         "try:\n    runpy.run_module('coursekit.core.nbgrader_command', run_name='__main__')\n"
         "except SystemExit:\n    pass\n"
         "import nbformat\n"
         "print('rfc3987_syntax loaded:', sys.modules.get('rfc3987_syntax') is not None)\n"
         "nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('1')])\n"
         "nbformat.validate(nb)\n"
         "nb.cells[0]['outputs'] = 'not a list'\n"
         "try:\n    nbformat.validate(nb)\nexcept nbformat.ValidationError:\n    print('invalid notebook refused')\n")


def test_it_is_the_nbgrader_command_without_the_slow_import(tmp_path):
    ours = subprocess.run([*nbgrader_command.command(), "--version"], cwd=tmp_path, capture_output=True, text=True, check=True)
    stock = subprocess.run([str(Path(sys.executable).with_name("nbgrader")), "--version"], cwd=tmp_path,
                           capture_output=True, text=True, check=True)
    assert ours.stdout == stock.stdout and "nbgrader version" in ours.stdout

    out = subprocess.run([sys.executable, "-P", "-c", PROBE], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert "rfc3987_syntax loaded: False" in out and "invalid notebook refused" in out


def test_a_course_folder_cannot_stand_in_for_coursekit(tmp_path):
    (tmp_path / "coursekit").mkdir()
    (tmp_path / "coursekit" / "__init__.py").write_text("raise SystemExit('the course folder was imported')\n")
    proc = subprocess.run([*nbgrader_command.command(), "--version"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0 and "nbgrader version" in proc.stdout
