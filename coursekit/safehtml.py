"""What of a student's HTML the course's pages show: the sanitiser policy, one place for all pages.

Students write markdown and HTML (written answers, cells of their own) and their code makes
outputs (HTML, Markdown, SVG, JavaScript). nbconvert and formgrader render all of it as it is
unless told otherwise, so a written answer holding ``<img src=x onerror=...>`` runs as script in
the browser of the TA who opens it, with the TA's Jupyter session. Every page the course
renders from a student's notebook (formgrader's submission view, the feedback pages:
``coursekit.pages``) goes through :func:`clean_html`, nbconvert's own sanitiser (bleach, as
``HTMLExporter.sanitize_html`` runs it) with this policy instead of nbconvert's default one:

- kept: text formatting, headings, lists, quotes, tables (with their column alignment), code
  blocks and their syntax highlighting (Pygments' ``class`` names), math (its TeX source is
  text, left as it is for a math renderer), images embedded as ``data:image/...`` URIs;
- shown as text (escaped, so that a TA sees what the student tried): every other tag
  (``script``, ``style``, ``iframe``, ``svg``, ``math``, ``form``, ``input``, ``base``, ``meta``,
  ``object``...);
- dropped: event handlers and every other attribute not listed, ``id`` and ``name`` (a student
  element must not take the name of one of the page's own: DOM clobbering), class names other
  than Pygments' short ones and nbconvert's own few, links other than ``http(s):``, ``mailto:``
  and ``#fragment``, images that are not ``data:image/`` URIs (a remote image tells the
  student's server who looks and when), styles other than colours, alignment and font style
  (no ``url()``, no ``position``: nothing that fetches or covers the page).

Grader-written markdown that quotes what a student chose (a grade id, a file name) quotes it
with :func:`quote_markdown`, so that it reads as the text it is.
"""

from __future__ import annotations

import html
import re

import bleach
from bleach.css_sanitizer import CSSSanitizer

TAGS = frozenset({
    "a", "abbr", "acronym", "b", "blockquote", "br", "caption", "cite", "code", "col", "colgroup", "dd",
    "del", "details", "dfn", "div", "dl", "dt", "em", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5",
    "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "samp", "small", "span",
    "strike", "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt",
    "u", "ul", "var",
})
ATTRIBUTES_BY_TAG = {
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan", "align"}, "th": {"colspan", "rowspan", "align", "scope"},
    "col": {"span"}, "colgroup": {"span"},
    "ol": {"start", "type"}, "li": {"value"},
    "details": {"open"},
}
GLOBAL_ATTRIBUTES = {"title", "lang", "class", "style"}
CSS_PROPERTIES = frozenset({
    "color", "background-color", "text-align", "vertical-align", "font-weight", "font-style",
    "text-decoration", "white-space",
})
# Pygments' token classes (k, nf, s1...), its wrapper (highlight, hl-python), and nbconvert's own
# markup for headings and task lists. Longer names could be the page's own (bootstrap's modal,
# navbar-fixed-top; formgrader's score, comment): not allowed.
CLASS_NAME = re.compile(r"[a-z]{1,3}[0-9]?|highlight|hl-[a-z0-9+-]+|anchor-link|task-list-item(-checkbox)?|math")
IMAGE_DATA_URI = re.compile(r"data:image/(png|jpeg|gif|webp|svg\+xml);base64,[A-Za-z0-9+/=\s]*", re.IGNORECASE)
LINK = re.compile(r"(https?:|mailto:|#)", re.IGNORECASE)
PROTOCOLS = frozenset({"http", "https", "mailto", "data"})  # data: passes only as an image (``_allowed``)


def _allowed(tag: str, name: str, value: str) -> bool:
    if name not in GLOBAL_ATTRIBUTES and name not in ATTRIBUTES_BY_TAG.get(tag, ()):
        return False
    value = value.strip()
    if name == "href":
        return bool(LINK.match(value))
    if name == "src":
        return bool(IMAGE_DATA_URI.fullmatch(value))
    if name == "class":
        return all(CLASS_NAME.fullmatch(token) for token in value.split())
    return True


_CSS = CSSSanitizer(allowed_css_properties=CSS_PROPERTIES)
_CLEANER = bleach.Cleaner(tags=TAGS, attributes=_allowed, protocols=PROTOCOLS, strip=False, strip_comments=True,
                          css_sanitizer=_CSS)


def clean_html(text) -> str:
    """``text`` (HTML, e.g. rendered markdown or an HTML output) with only what the policy keeps.

    nbconvert's ``clean_html`` filter, with the course's policy: the exporters of
    ``coursekit.pages`` register it under that name, so nbconvert's templates sanitise with it.
    """
    text = text.decode() if isinstance(text, bytes) else str(text)
    return _CLEANER.clean(text)


_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!|~$])")


def quote_markdown(text) -> str:
    """``text`` as literal text inside markdown: no markup, no HTML, one line.

    For the grader's own markdown cells (the "Grading notes"), which quote grade ids and file
    names that a student chose. Markdown punctuation is backslash-escaped (CommonMark) and HTML's
    special characters become entities, which every markdown renderer shows as the characters.
    """
    one_line = " ".join(str(text).split())
    return html.escape(_MARKDOWN_PUNCTUATION.sub(r"\\\1", one_line), quote=True)
