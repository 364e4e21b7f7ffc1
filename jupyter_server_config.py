"""The course's Jupyter config (owner: issues 12 and 25). Optional since issue 25: ``bin/setup``
installs the same into the environment (``coursekit.rendering.formgrader.install_default_config``), so
``jupyter server``, ``jupyter lab`` and ``jupyter notebook`` serve the course's formgrader with
or without ``--config=jupyter_server_config.py`` (Jupyter Server 2 does not read this file from
its working directory by itself). The hub's staff config (hub/staff/) reads it too.

- formgrader is the course's (`coursekit.rendering.formgrader`): nbgrader's, with the submission view
  rendered sanitised and bounded, and no inline script in its pages. nbgrader's own formgrader
  extension is switched off: stock formgrader runs a student's HTML in the TA's page.
- A strict Content-Security-Policy on every page (``coursekit.rendering.formgrader.CONTENT_SECURITY_POLICY``),
  the second wall behind the sanitiser.
"""

from coursekit.rendering.formgrader import CONTENT_SECURITY_POLICY, default_config

c = get_config()  # noqa: F821

c.ServerApp.jpserver_extensions = default_config()["ServerApp"]["jpserver_extensions"]
c.ServerApp.tornado_settings = {"headers": {"Content-Security-Policy": CONTENT_SECURITY_POLICY}}
