"""The staff's Jupyter servers on the course hub: the same formgrader and Content-Security-Policy
as the TAs' server on the course root (the repository's ``jupyter_server_config.py``, which a
server only reads when told to), and no Assignments tab (students fetch, staff do not).

bin/hub copies this folder into the hub's etc/staff/ and points the staff's JUPYTER_CONFIG_PATH
at it; the staff's PYTHONPATH is the repository (hub/jupyterhub_config.py), where the course's
own config is read from.
"""

import os
from pathlib import Path

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

_course_config = Path(os.environ["PYTHONPATH"].split(os.pathsep)[0]) / "jupyter_server_config.py"
exec(compile(_course_config.read_text(), str(_course_config), "exec"), {"get_config": lambda: c})
c.ServerApp.jpserver_extensions["nbgrader.server_extensions.assignment_list"] = False
