"""The course's formgrader: nbgrader's, with pages that run nothing a student wrote.

A Jupyter server extension that takes the place of ``nbgrader.server_extensions.formgrader``,
which it loads itself and then adjusts. It is the default of the course's environment:
``bin/setup`` runs ``install_default_config(.venv)`` (section 5), so ``jupyter server``,
``jupyter lab`` and ``jupyter notebook``, with or without ``--config=jupyter_server_config.py``,
serve this formgrader and never nbgrader's. Stock formgrader renders a student's markdown and HTML outputs as they are,
and quotes student ids unescaped, in pages that carry the TA's Jupyter session: a written answer
holding ``<img src=x onerror=...>`` writes into the course and opens a terminal as the grading
user (tests/rendering/test_ta_pages.py shows it). Here:

1. The submission view (Manual Grading -> a submission) is rendered by
   ``coursekit.rendering.pages.FormgradeExporter``: cut to the size limits, sanitised, every value escaped,
   no inline script. It renders in a worker thread: a slow notebook never stops the server.
2. nbgrader's other pages come from its own templates, autoescaped, with those that had inline
   scripts or event handlers replaced by ``coursekit/templates/formgrader/``: their values are a
   JSON data island, and ``coursekit/static/formgrader.js`` (served at
   ``<base_url>coursekit/static/``) does what the inline code did.
3. Files of a submission folder (``/formgrader/submissions/<id>/<file>``) are served in a
   sandbox (``Content-Security-Policy: sandbox``): a student's HTML or SVG file opened there
   runs no script. (Jupyter's own ``/files/`` already adds ``sandbox allow-scripts``.)
4. The server's Content-Security-Policy (``CONTENT_SECURITY_POLICY``, unless the server is
   configured with one of its own) refuses inline scripts, event handlers and ``eval`` on every
   page. JupyterLab's and Notebook's own pages need ``eval``
   (their bundles compile JSON schemas): for those documents only, ``script-src`` gains
   ``'unsafe-eval'`` and the hash of JupyterLab's one inline script (which takes the token out
   of the address bar). Formgrader's pages, in JupyterLab's frame or not, keep the strict policy.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
from pathlib import Path

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader
from markupsafe import Markup
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.ioloop import IOLoop

from coursekit.rendering.pages import FormgradeExporter

HERE = Path(__file__).resolve().parent.parent
STATIC = HERE / "static"
PAGE_TEMPLATES = HERE / "templates" / "formgrader"
# The documents of JupyterLab and Notebook 7 (first path segment after the base URL).
APP_PAGES = {"lab", "tree", "notebooks", "edit", "consoles", "terminals", "doc"}
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


# The TAs' server's policy, the second wall behind the sanitiser: scripts only from the server's
# own files (no inline script, no event handler, no eval), nothing fetched from or sent to another
# origin, no plugins, no <base>, no framing by other sites. JupyterLab's own pages need eval for
# their bundles and get it (section 4, ``app_page_policy``); formgrader's pages never do.
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
STOCK_FORMGRADER = "nbgrader.server_extensions.formgrader"


def _jupyter_server_extension_points():
    return [{"module": "coursekit.rendering.formgrader"}]


def _load_jupyter_server_extension(serverapp) -> None:
    from nbgrader.server_extensions.formgrader import formgrader as nbgrader_formgrader
    from nbgrader.server_extensions.formgrader import handlers as nbgrader_handlers

    web_app = serverapp.web_app
    base_url = web_app.settings["base_url"]

    def route(pattern: str, *rest):
        return (url_path_join(base_url, pattern), *rest)

    # Added before nbgrader's handlers, so matched first. nbgrader's own patterns for the static
    # components and the next/previous links come before the sandboxed files, which match any path.
    web_app.add_handlers(".*$", [
        route(r"coursekit/static/(.*)", web.StaticFileHandler, {"path": str(STATIC)}),
        route(r"formgrader/submissions/components/(.*)", web.StaticFileHandler,
              {"path": nbgrader_handlers.components_path}),
        route(r"formgrader/submissions/([^/]+)/?", _submission_handler(nbgrader_handlers)),
        route(r"formgrader/submissions/(?P<submission_id>[^/]+)/%s/?" % nbgrader_handlers._navigation_regex,
              nbgrader_handlers.SubmissionNavigationHandler),
        route(r"formgrader/submissions/(.*)", _sandboxed_files_handler(nbgrader_handlers)),
    ])
    nbgrader_formgrader.load_jupyter_server_extension(serverapp)

    formgrader = web_app.settings["nbgrader_formgrader"]
    web_app.settings["nbgrader_exporter"] = FormgradeExporter(config=formgrader.config)
    web_app.settings["nbgrader_jinja2_env"] = page_templates(nbgrader_handlers.template_path)

    # Jupyter's handlers read the headers per request: from here on, every page carries the policy.
    headers = web_app.settings.setdefault("headers", {})
    policy = headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    web_app.add_transform(_app_page_policy(base_url, app_page_policy(policy, _lab_inline_script_hashes())))
    if serverapp.jpserver_extensions.get(STOCK_FORMGRADER):
        serverapp.log.warning("coursekit.rendering.formgrader: %s is enabled too; its pages run a student's script: "
                              "run bin/setup, or disable it", STOCK_FORMGRADER)
    serverapp.log.info("coursekit.rendering.formgrader: nbgrader's formgrader with the course's pages and "
                       "Content-Security-Policy%s", "" if policy == CONTENT_SECURITY_POLICY else " (the server's own)")


# --- 1. the submission view -------------------------------------------------------------------


def _submission_handler(nbgrader_handlers):
    from nbgrader.api import MissingEntry
    from nbgrader.server_extensions.formgrader.base import check_notebook_dir, check_xsrf

    class SubmissionHandler(nbgrader_handlers.SubmissionHandler):
        """nbgrader 0.9.6's SubmissionHandler.get, rendering in a worker thread (one at a time:
        the exporter is shared)."""

        render_lock = threading.Lock()

        @web.authenticated
        @check_xsrf
        @check_notebook_dir
        async def get(self, submission_id):
            try:
                submission = self.gradebook.find_submission_notebook_by_id(submission_id)
                assignment_id = submission.assignment.assignment.name
                notebook_id = submission.notebook.name
                student_id = submission.student.id
            except MissingEntry:
                raise web.HTTPError(404, "Invalid submission: {}".format(submission_id))

            if os.path.split(self.request.path)[1] == submission_id:  # add the trailing slash
                url = self.request.path + "/"
                if self.request.query:
                    url += "?" + self.request.query
                return self.redirect(url, permanent=True)

            filename = os.path.join(os.path.abspath(self.coursedir.format_path(
                self.coursedir.autograded_directory, student_id, assignment_id)), f"{notebook_id}.ipynb")
            indices = self.api.get_notebook_submission_indices(assignment_id, notebook_id)
            resources = {
                "assignment_id": assignment_id, "notebook_id": notebook_id, "submission_id": submission.id,
                "index": indices.get(submission.id, -2), "total": len(indices), "base_url": self.base_url,
                "student": student_id, "last_name": submission.student.last_name,
                "first_name": submission.student.first_name,
                "notebook_path": self.url_prefix + "/" + os.path.relpath(filename, self.coursedir.root),
            }
            if not os.path.exists(filename):
                resources["filename"] = filename
                self.set_status(404)
                return self.write(self.render("formgrade_404.tpl", resources=resources))
            html = await IOLoop.current().run_in_executor(None, self._render, filename, resources)
            self.write(html)

        def _render(self, filename, resources) -> str:
            with self.render_lock:
                html, _ = self.exporter.from_filename(filename, resources=resources)
            return html

    return SubmissionHandler


# --- 2. nbgrader's other pages ----------------------------------------------------------------


def page_templates(nbgrader_templates: str) -> Environment:
    """nbgrader's page templates, autoescaped, the course's first (they extend nbgrader's as
    ``nbgrader/<name>``)."""
    nbgrader = FileSystemLoader(nbgrader_templates)
    env = Environment(loader=ChoiceLoader([FileSystemLoader(str(PAGE_TEMPLATES)), PrefixLoader({"nbgrader": nbgrader}),
                                           nbgrader]), autoescape=True)
    env.filters["without_inline_scripts"] = without_inline_scripts
    return env


def without_inline_scripts(html) -> Markup:
    """nbgrader's page markup without its inline ``<script>`` elements (those with a ``src``
    stay). Only ever applied to nbgrader's templates, whose values are autoescaped."""
    return Markup(_INLINE_SCRIPT.sub("", str(html)))


# --- 3. files of a submission -----------------------------------------------------------------


def _sandboxed_files_handler(nbgrader_handlers):
    class SubmissionFilesHandler(nbgrader_handlers.SubmissionFilesHandler):
        @property
        def content_security_policy(self) -> str:
            return super().content_security_policy + "; sandbox"

    return SubmissionFilesHandler


# --- 4. the policy of JupyterLab's own pages --------------------------------------------------


def app_page_policy(policy: str, script_hashes: list[str]) -> str:
    """``policy`` with ``'unsafe-eval'`` and ``script_hashes`` added to its ``script-src``."""
    extra = ["'unsafe-eval'", *(f"'sha256-{h}'" for h in script_hashes)]
    directives = [d.strip() for d in policy.split(";") if d.strip()]
    for i, directive in enumerate(directives):
        if directive.split()[0] == "script-src":
            directives[i] = " ".join([directive, *extra])
            break
    else:
        directives.append(" ".join(["script-src 'self'", *extra]))
    return "; ".join(directives)


def _lab_inline_script_hashes() -> list[str]:
    """SHA-256 of the inline scripts of JupyterLab's page template (static text of JupyterLab's)."""
    try:
        from jupyterlab.commands import get_app_dir

        template = (Path(get_app_dir()) / "static" / "index.html").read_text()
    except (ImportError, OSError):
        return []
    return [base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() for body in _INLINE_SCRIPT.findall(template)]


def _app_page_policy(base_url: str, policy: str):
    prefix = url_path_join(base_url, "/")

    class AppPagePolicy(web.OutputTransform):
        def __init__(self, request):
            self.path = request.path

        def transform_first_chunk(self, status_code, headers, chunk, finishing):
            segment = self.path[len(prefix):].split("/", 1)[0] if self.path.startswith(prefix) else ""
            if segment in APP_PAGES and headers.get("Content-Type", "").startswith("text/html") \
                    and "Content-Security-Policy" in headers:
                headers["Content-Security-Policy"] = policy
            return status_code, headers, chunk

    return AppPagePolicy


# --- 5. safe by default: the environment's Jupyter config -------------------------------------
#
# Jupyter Server 2 reads no config from its working directory: a TA who starts ``jupyter lab`` in
# the course root without ``--config=jupyter_server_config.py`` got nbgrader's formgrader, which
# nbgrader's own ``etc/jupyter/jupyter_server_config.d/nbgrader.json`` enables in the environment,
# and a student's script ran in the TA's page (tests/rendering/test_formgrader_default.py). Every Jupyter
# server of an environment (``jupyter server``, ``lab``, ``notebook``) merges the
# ``jupyter_server_config.d/*.json`` of the environment's config folder in name order, a later
# file winning, over the user's (~/.jupyter) and the system's: the course's file sorts after
# nbgrader's (and after what ``jupyter server extension enable --sys-prefix`` writes).

DEFAULT_CONFIG_FILE = "zz-coursekit-formgrader.json"


def default_config(course_formgrader: bool = True) -> dict:
    """nbgrader's formgrader off; the course's on, unless not ``course_formgrader`` (where
    coursekit is not installed, e.g. the hub's environment: its staff's config turns it on)."""
    extensions = {STOCK_FORMGRADER: False}
    if course_formgrader:
        extensions["coursekit.rendering.formgrader"] = True
    return {"ServerApp": {"jpserver_extensions": extensions}}


def install_default_config(prefix, course_formgrader: bool = True) -> Path:
    """Write ``default_config`` into the Jupyter config of the environment at ``prefix`` (a venv's
    folder, ``sys.prefix``); returns the file. The Content-Security-Policy comes with the
    extension (``CONTENT_SECURITY_POLICY``): ``.d`` files only enable extensions."""
    folder = Path(prefix) / "etc" / "jupyter" / "jupyter_server_config.d"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DEFAULT_CONFIG_FILE
    text = json.dumps(default_config(course_formgrader), indent=2) + "\n"
    if not path.is_file() or path.read_text() != text:
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text)
        os.chmod(partial, 0o644)  # every account's server reads it (the hub's environment)
        partial.replace(path)
    return path


if __name__ == "__main__":  # python -m coursekit.rendering.formgrader [prefix]: what bin/setup runs
    import sys

    print(install_default_config(sys.argv[1] if len(sys.argv) > 1 else sys.prefix))
