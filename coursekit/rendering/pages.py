"""The course's HTML pages, none of which runs what a student wrote.

- The class report, and the feedback summary and verdicts, come from the Jinja2 templates in
  ``coursekit/templates/``. Autoescaping is on for every template: student names, messages,
  notebook names and grade ids are hostile input and are only ever shown as text. Filters:
  ``points`` (``3.0`` -> ``3``) and ``oneline`` (escaped, line breaks as ``<br>``).
- Pages of a student's notebook are nbconvert's HTML exporter with the course's templates
  (``coursekit/templates/nbconvert/``) and sanitiser (``coursekit.rendering.safehtml``), after the notebook
  is cut to the size limits (``coursekit.rendering.bounds``): ``FormgradeExporter`` is formgrader's
  submission view (``coursekit.rendering.formgrader`` installs it), ``FeedbackExporter`` writes the
  feedback pages (``GenerateFeedback.exporter_class`` in nbgrader_config.py). The metadata that
  nbconvert's templates write into a page is checked with the cut (``coursekit.rendering.safehtml``); an
  image pasted into a written answer is shown as a checked ``data:`` image or named
  (``_PageMarkdown``).
- Pages opened as files (the report, feedback) carry their own Content-Security-Policy in a
  ``<meta>`` element; the TAs' Jupyter server sends its own (jupyter_server_config.py).
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path

from urllib.parse import unquote

from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context
from markupsafe import Markup, escape
from nbconvert.exporters import HTMLExporter
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
from traitlets.config import Config

from coursekit.rendering import bounds, safehtml

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
NBCONVERT_TEMPLATES = TEMPLATES / "nbconvert"
NBGRADER_CSS = Path(__import__("nbgrader").__file__).parent / "server_extensions" / "formgrader" / "static" / \
    "node_modules" / "bootstrap" / "dist" / "css"

# MathJax for the feedback pages, pinned (nbconvert's default, latest.js, loads whatever version is
# newest from another path): the pages' policy lets scripts come from this folder only.
MATHJAX_DIR = "https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/"
MATHJAX_URL = MATHJAX_DIR + "MathJax.js?config=TeX-AMS_CHTML-full,Safe"
# A page opened as a file: no script but MathJax ('unsafe-eval': MathJax 2 evaluates its own
# configuration block), styles inline (the page's own) and from MathJax, images only as data:
# URIs, fonts from MathJax, nothing else fetched, no form, no <base>.
FILE_PAGE_CSP = "; ".join([
    "default-src 'none'", f"script-src {MATHJAX_DIR} 'unsafe-eval'", f"style-src 'unsafe-inline' {MATHJAX_DIR}",
    "img-src data:", f"font-src {MATHJAX_DIR}", "base-uri 'none'", "form-action 'none'",
])
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def points(value) -> str:
    return f"{float(value or 0):g}"


def oneline(value) -> Markup:
    return Markup(str(escape("" if value is None else value)).replace("\r", "").replace("\n", "<br>"))


@lru_cache(maxsize=None)
def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False)
    env.filters.update(points=points, oneline=oneline)
    return env


def render(template: str, **context) -> str:
    return environment().get_template(template).render(**context)


# --- pages of a student's notebook (nbconvert) ----------------------------------------------


class _PageMarkdown(IPythonRenderer):
    """nbconvert's markdown renderer for the course's pages: an image pasted into a written answer
    (``![image.png](attachment:image.png)``) is an <img> of a ``data:`` URI only if
    ``coursekit.rendering.safehtml.attachment_image`` allows it, else a placeholder that names it
    (nbconvert raises for an unknown name: formgrader answered HTTP 500 and the student got no
    feedback page); no other image is embedded (nbconvert can read local files into the page)."""

    def __init__(self, *args, image_limit: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.image_limit = image_limit

    def image(self, text: str, url: str, title=None) -> str:
        if url.startswith("attachment:"):
            name = url[len("attachment:"):]
            bundle = self.attachments.get(name, self.attachments.get(unquote(name)))
            image = safehtml.attachment_image(bundle, self.image_limit)
            if image is None:
                return safehtml.attachment_placeholder(unquote(name))
            url = f"data:{image[0]};base64,{image[1]}"
        # mistune's own <img> (IPythonRenderer's would embed or look up the file); clean_html drops
        # every src that is not a data: image
        return super(IPythonRenderer, self).image(text, url, title)


class _SafeNotebookPage(HTMLExporter):
    """nbconvert's HTML exporter, sanitising with the course's policy, after ``BoundedRendering``.

    The settings that make it safe go in this class's own configuration section, which wins over
    ``HTMLExporter``'s: nbgrader configures ``HTMLExporter.template_name`` for formgrader and
    feedback, which applies to subclasses too and would otherwise put its unsafe templates back.
    """

    page_template = ""

    def __init__(self, config=None, **kw):
        config = Config(config) if config is not None else Config()
        config.merge(Config({type(self).__name__: self.safe_settings()}))
        super().__init__(config=config, **kw)
        # Before any other preprocessor (and nbgrader's, registered after) sees a 2.5 MB cell.
        self.bounded_rendering = bounds.BoundedRendering(parent=self, enabled=True)
        self._preprocessors.insert(0, self.bounded_rendering)

    @pass_context
    def markdown2html(self, context, source, attachments=None):
        """nbconvert's ``markdown2html`` filter with ``_PageMarkdown``; ``attachments`` are the
        cell's (``safe_macros.html.j2`` passes them: a macro does not see the template's ``cell``)."""
        if attachments is None:
            cell = context.get("cell", {})
            attachments = cell.get("attachments", {}) if isinstance(cell, dict) else {}
        renderer = _PageMarkdown(
            escape=False, attachments=attachments if isinstance(attachments, dict) else {}, embed_images=False,
            path="", anchor_link_text=self.anchor_link_text, exclude_anchor_links=self.exclude_anchor_links,
            image_limit=self.bounded_rendering.limits.output_image, **self.lexer_options)
        return MarkdownWithMath(renderer=renderer).render(source)

    def safe_settings(self) -> dict:
        return {"template_name": self.page_template, "extra_template_basedirs": [str(NBCONVERT_TEMPLATES)],
                "sanitize_html": True, "filters": {"clean_html": safehtml.clean_html}}


class FormgradeExporter(_SafeNotebookPage):
    """formgrader's submission view (Manual Grading): ``coursekit_formgrade`` template."""

    page_template = "coursekit_formgrade"


class FeedbackExporter(_SafeNotebookPage):
    """A student's feedback page (``nbgrader generate_feedback``): ``coursekit_feedback`` template.

    ``resources["coursekit"]``: ``trusted``, this page's one-time token that marks the cells and
    outputs the course's grader wrote (``coursekit.rendering.feedback``), and the page's
    ``content_security_policy``.
    """

    page_template = "coursekit_feedback"

    def safe_settings(self) -> dict:
        # bootstrap.min.css is inlined from nbgrader's copy, as nbgrader's feedback template does.
        return {**super().safe_settings(), "mathjax_url": MATHJAX_URL, "extra_template_paths": [str(NBGRADER_CSS)]}

    def from_notebook_node(self, nb, resources=None, **kw):
        resources = dict(resources or {})
        resources["coursekit"] = {"trusted": secrets.token_hex(16), "content_security_policy": FILE_PAGE_CSP}
        return super().from_notebook_node(nb, resources=resources, **kw)
