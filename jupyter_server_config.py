"""The Jupyter server the TAs use for formgrader (owner: issue 12). Read by `jupyter lab`,
`jupyter server` and `jupyter notebook` started in the course root (Jupyter reads the
`jupyter_server_config.py` of its working directory).

- formgrader is the course's (`coursekit.formgrader`): nbgrader's, with the submission view
  rendered sanitised and bounded, and no inline script in its pages. nbgrader's own formgrader
  extension is switched off: stock formgrader runs a student's HTML in the TA's page.
- A strict Content-Security-Policy on every page, the second wall behind the sanitiser: scripts
  only from this server's own files (no inline script, no event handler, no eval), nothing
  fetched from or sent to another origin, no plugins, no <base>, no framing by other sites.
  JupyterLab's own pages need eval for their bundles and get it (coursekit.formgrader,
  `app_page_policy`); formgrader's pages never do.
"""

c = get_config()  # noqa: F821

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "manifest-src 'self'",
    "frame-src 'self'",
    "worker-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'self'",
])

c.ServerApp.jpserver_extensions = {"nbgrader.server_extensions.formgrader": False, "coursekit.formgrader": True}
c.ServerApp.tornado_settings = {"headers": {"Content-Security-Policy": CONTENT_SECURITY_POLICY}}
