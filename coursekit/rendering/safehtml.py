"""What of a student's HTML the course's pages show: the sanitiser policy, one place for all pages.

Students write markdown and HTML (written answers, cells of their own) and their code makes
outputs (HTML, Markdown, SVG, JavaScript). nbconvert and formgrader render all of it as it is
unless told otherwise, so a written answer holding ``<img src=x onerror=...>`` runs as script in
the browser of the TA who opens it, with the TA's Jupyter session. Every page the course
renders from a student's notebook (formgrader's submission view, the feedback pages:
``coursekit.rendering.pages``) goes through :func:`clean_html`, nbconvert's own sanitiser (bleach, as
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

What nbconvert's templates write into a page from a notebook's metadata, bypassing the
sanitiser (an image's width and height, file names, cell tags...), is reduced to values they
cannot misuse (:func:`clean_output_fields`, :func:`clean_cell_fields`), and an image pasted into
a written answer is shown only as a checked ``data:`` image (:func:`attachment_image`), both
before any template sees the notebook (``coursekit.rendering.bounds``).

Grader-written markdown that quotes what a student chose (a grade id, a file name) quotes it
with :func:`quote_markdown`, so that it reads as the text it is.
"""

from __future__ import annotations

import base64
import binascii
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
    ``coursekit.rendering.pages`` register it under that name, so nbconvert's templates sanitise with it.
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


# --- what nbconvert's templates read from a notebook besides its text -----------------------
#
# nbconvert's HTML templates (classic and lab) write some of a notebook's metadata into the page
# without the sanitiser: an image output's ``width`` and ``height`` go in unquoted
# (``height="1 onload=..."`` adds an event handler, ``width="100% style=position:fixed..."`` a
# style that covers the page), ``filenames`` becomes an image's ``src`` (a remote image), a
# ``text/html`` output marked ``isolated`` an <iframe>, a cell tag with a space in it a class
# name of the page's own (bootstrap's ``navbar-fixed-top``), ``execution_count`` the prompt's
# text, ``transient.remove_source`` hides a cell's code from the TA. Before any template sees a
# notebook (``coursekit.rendering.bounds``: at autograde and in every page's exporter), what a template
# reads is reduced to values it cannot misuse:

IMAGE_SIDE = 10_000  # pixels: an output image's width or height, at most
ALT_TEXT = 1_000  # characters of an image's alt text
# Per-MIME-type (or top-level) output metadata that nbconvert's templates read, and what is kept:
OUTPUT_METADATA = {
    "width": "size", "height": "size",  # a number of pixels, 1..IMAGE_SIDE
    "unconfined": "boolean",  # class="unconfined"
    "needs_background": ("light", "dark"),  # lab's class names
    "alt": "text",  # quoted and escaped by the template
}
CELL_TAG = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _metadata_value(kind, value):
    """``value`` if it is what ``kind`` allows (as a plain int for a size), else None."""
    if kind == "size":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            return None
        return int(value) if 1 <= value <= IMAGE_SIDE else None
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    if kind == "text":
        return value[:ALT_TEXT] if isinstance(value, str) else None
    return value if value in kind else None


def _clean_metadata_fields(fields: dict) -> dict:
    kept = {}
    for key, kind in OUTPUT_METADATA.items():
        value = _metadata_value(kind, fields.get(key))
        if value is not None:
            kept[key] = value
    return kept


def clean_output_fields(out) -> None:
    """Reduce an output's metadata to ``OUTPUT_METADATA`` (per MIME type and top-level), and drop
    the fields nbconvert reads as file names; a non-integer ``execution_count`` becomes None."""
    metadata = out.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    kept = type(out)() if hasattr(out, "keys") else {}
    kept.update(_clean_metadata_fields(metadata))
    for mime, fields in metadata.items():
        if isinstance(mime, str) and "/" in mime and isinstance(fields, dict):
            cleaned = _clean_metadata_fields(fields)
            if cleaned:
                kept[mime] = cleaned
    if "metadata" in out or kept:
        out["metadata"] = kept
    for name in ("svg_filename", "filenames"):
        out.pop(name, None)
    if "execution_count" in out and not _is_count(out["execution_count"]):
        out["execution_count"] = None


def _is_count(value) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def clean_cell_fields(cell) -> None:
    """What templates read from a cell besides its source and outputs: its tags (class names:
    only plain names kept), ``alt`` (text), ``execution_count`` (an integer), and no
    ``transient`` (nbconvert hides a cell's source for it)."""
    metadata = cell.get("metadata")
    if not isinstance(metadata, dict):
        cell["metadata"] = metadata = type(cell)() if hasattr(cell, "keys") else {}
    if "tags" in metadata:
        tags = metadata["tags"] if isinstance(metadata["tags"], list) else []
        metadata["tags"] = [t for t in tags if isinstance(t, str) and CELL_TAG.fullmatch(t)]
    if "alt" in metadata and _metadata_value("text", metadata["alt"]) is None:
        del metadata["alt"]
    elif "alt" in metadata:
        metadata["alt"] = metadata["alt"][:ALT_TEXT]
    metadata.pop("transient", None)
    if "execution_count" in cell and not _is_count(cell["execution_count"]):
        cell["execution_count"] = None


# --- images pasted into a written answer (markdown attachments) ----------------------------
#
# JupyterLab stores a pasted screenshot in the cell: ``![image.png](attachment:image.png)`` and
# ``"attachments": {"image.png": {"image/png": "<base64>"}}``. A page shows an attachment only as
# an <img> of a ``data:`` URI of a raster image whose base64 decodes and whose bytes start as that
# type's do; anything else (SVG, HTML, a bad base64, an unknown or missing name) is named in a
# placeholder instead. The size limit is ``coursekit.rendering.bounds``'.

ATTACHMENT_TYPES = {  # MIME type -> the signatures its files start with
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),  # and "WEBP" at byte 8, checked below
}
ATTACHMENT_NAME = 200  # characters of an attachment's name shown in a placeholder


def _text_value(value) -> str | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "".join(value)
    return value if isinstance(value, str) else None


def attachment_image(bundle, limit: int) -> tuple[str, str] | None:
    """``(mime, base64)`` of the first image of an attachment's MIME bundle that a page may show
    (type allowed, at most ``limit`` characters, base64 that decodes to that type), else None."""
    if not isinstance(bundle, dict):
        return None
    for mime in ATTACHMENT_TYPES:
        data = _text_value(bundle.get(mime))
        if data is None:
            continue
        data = "".join(data.split())
        if not data or len(data) > limit:
            continue
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            continue
        if raw.startswith(ATTACHMENT_TYPES[mime]) and (mime != "image/webp" or raw[8:12] == b"WEBP"):
            return mime, data
    return None


def clean_attachments(attachments, limit: int) -> tuple[dict, list[str]]:
    """The attachments a page may show, each reduced to its one shown image, and the names of the
    others (refused: see ``attachment_image``)."""
    if not isinstance(attachments, dict):
        return {}, ([] if not attachments else ["(attachments that are not a mapping)"])
    kept, refused = {}, []
    for name, bundle in attachments.items():
        image = attachment_image(bundle, limit) if isinstance(name, str) else None
        if image is None:
            refused.append(str(name))
        else:
            kept[name] = {image[0]: image[1]}
    return kept, refused


def attachment_placeholder(name: str) -> str:
    """What a page shows instead of an attachment it does not show (escaped HTML)."""
    shown = name if len(name) <= ATTACHMENT_NAME else name[:ATTACHMENT_NAME] + "..."
    return (f"<em>[pasted image {html.escape(repr(shown), quote=True)} not shown: only PNG, JPEG, GIF and WebP "
            "images within the size limit are shown]</em>")
