"""How much of a student's notebook a page renders: what is longer is cut, with a note, first.

Rendering costs time in proportion to what it parses, and adversarial input makes it slow: on
this 2-core machine a markdown renderer takes ~20 µs per character of nested quotes and
emphasis, the HTML sanitiser ~15 µs and Pygments ~35 µs per character of code. A 2.5 MB written
answer blocked the Jupyter server (formgrader renders inside the server's event loop) and took
15 s and 1.1 GB to render as feedback (``benchmarks/markdown_bomb.py``). So before any renderer
sees a notebook:

- a markdown or raw cell longer than ``cell_source`` is cut (a written answer is a few
  paragraphs; 20,000 characters are ~8 pages), and so is a code cell's source where it is only
  shown (formgrader, feedback; never before grading: the code that was graded stays whole in
  the autograded notebook);
- an output's text (stream, ``text/plain``, an error) longer than ``output_text``, or its markup
  (``text/html``, ``text/markdown``, ``image/svg+xml``, ``text/latex``) longer than
  ``output_markup``, is cut; an image over ``output_image`` characters (base64) is replaced by
  a note;
- a pasted image (a markdown cell's attachment) is kept only if it is one a page shows
  (``coursekit.rendering.safehtml.clean_attachments``: PNG, JPEG, GIF or WebP whose base64 decodes to
  that type) within ``output_image`` characters and the notebook's output budget; the page names
  the others in a placeholder;
- what nbconvert's templates read from a cell's or an output's metadata is reduced to values
  they cannot misuse (``coursekit.rendering.safehtml.clean_output_fields``, ``clean_cell_fields``: an
  image's width and height written unquoted into the page, file names used as an image's
  ``src``...);
- once the student's cells and markup outputs of a notebook reach ``notebook_markup``
  characters (everything a renderer parses that the student chose), or all outputs reach
  ``notebook_outputs``, what comes after is cut.

The release's read-only cells (prompts with their mark schemes, checks) have a budget of their
own, ``readonly_cell`` each and ``notebook_readonly`` in all, far above what the release holds
(2,300 and 31,000 characters): a student who bloats their own cells cannot push a mark scheme
off the TA's page. After the autograde repairs, only the release's cells carry nbgrader's
read-only flag (``coursekit.submissions.sanitize.RepairCells`` strips it from every other cell).

Worst case, a page then parses ~``notebook_markup`` adversarial characters: a few seconds on this
machine instead of minutes, and the formgrader page renders outside the event loop anyway
(``coursekit.rendering.formgrader``). The full text is still in the student's submitted notebook.

Where: ``coursekit.submissions.sanitize`` cuts markdown and raw cells before grading and outputs after, so
the autograded notebook (what formgrader and JupyterLab open) is bounded, and each cut is a
"Grading notes" line and a recorded problem; ``BoundedRendering`` cuts again in the exporters
of ``coursekit.rendering.pages`` (formgrader's submission view, the feedback pages), so that a notebook
autograded some other way is bounded too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nbconvert.preprocessors import Preprocessor
from traitlets import Instance

from coursekit.rendering import safehtml
from coursekit.core.notebook import cell_name, is_readonly

TEXT_KINDS = ("text/plain",)
MARKUP_KINDS = ("text/html", "text/markdown", "image/svg+xml", "text/latex")


@dataclass(frozen=True)
class Limits:
    cell_source: int = 20_000
    output_text: int = 100_000
    output_markup: int = 20_000
    output_image: int = 2_000_000
    notebook_markup: int = 200_000
    notebook_outputs: int = 10_000_000
    readonly_cell: int = 100_000
    notebook_readonly: int = 1_000_000


@dataclass(frozen=True)
class Cut:
    """One thing cut: where (a cell's name), what, how long it was and how much is kept."""

    where: str
    what: str  # "cell" (a markdown, raw or code cell's text), "output" or "attachment" (a pasted image)
    size: int
    kept: int

    def note(self) -> str:
        if self.what == "attachment":
            return (f"A pasted image in a cell ({self.where}) had {self.size:,} characters; it was removed from the "
                    "graded notebook and the feedback.")
        if self.what == "cell":
            return (f"A cell ({self.where}) had {self.size:,} characters; only the first {self.kept:,} are kept "
                    "in the graded notebook and the feedback (the whole text is in the submitted notebook).")
        if not self.kept:
            return (f"A cell ({self.where}) made an output of {self.size:,} characters (an image, or beyond the "
                    "notebook's limit); it was removed from the graded notebook and the feedback.")
        return (f"A cell ({self.where}) printed {self.size:,} characters in one output; only the first "
                f"{self.kept:,} are kept in the graded notebook and the feedback.")


# The note a cut text ends with. A text that already ends with one (cut at autograde, rendered
# later) is not cut again for the few characters the note adds.
_CUT_NOTE = re.compile(r"(\*\[cut by the grader: [0-9,]+ characters, the first [0-9,]+ are shown\]\*|"
                       r"\.\.\. output cut by the grader \([0-9,]+ characters\) \.\.\.|"
                       r"# \.\.\. cut by the grader: [0-9,]+ characters, the first [0-9,]+ are shown \.\.\.)\n$")
NOTE_ROOM = 120  # characters a note may add beyond a limit


def _already_cut(text: str, keep: int) -> bool:
    return len(text) <= keep + NOTE_ROOM and bool(_CUT_NOTE.search(text[-NOTE_ROOM:]))


def _cut_text(text: str, keep: int, size: int, markdown: bool) -> str:
    marker = f"output cut by the grader ({size:,} characters)" if not markdown else \
        f"cut by the grader: {size:,} characters, the first {keep:,} are shown"
    return text[:keep] + (f"\n\n*[{marker}]*\n" if markdown else f"\n... {marker} ...\n")


class _Budget:
    def __init__(self, limits: Limits):
        self.limits = limits
        self.markup = limits.notebook_markup
        self.outputs = limits.notebook_outputs
        self.readonly = limits.notebook_readonly

    def take_markup(self, size: int, limit: int) -> int:
        keep = max(0, min(size, limit, self.markup))
        self.markup -= keep
        return keep

    def take_source(self, cell, size: int) -> int:
        """How much of a cell's source to keep."""
        if is_readonly(cell):
            keep = max(0, min(size, self.limits.readonly_cell, self.readonly))
            self.readonly -= keep
            return keep
        return self.take_markup(size, self.limits.cell_source)

    def take_output(self, size: int, limit: int) -> int:
        keep = max(0, min(size, limit, self.outputs))
        self.outputs -= keep
        return keep


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else value


def cut_sources(nb, limits: Limits = Limits(), code: bool = False, readonly: bool = True,
                budget: _Budget | None = None) -> list[Cut]:
    """Cut the markdown and raw cells of ``nb``, and its code cells if ``code``, and its
    read-only cells only if ``readonly`` (before grading they are restored from the release
    anyway); returns what was cut."""
    budget = budget or _Budget(limits)
    cuts = []
    for index, cell in enumerate(nb.cells):
        safehtml.clean_cell_fields(cell)  # what templates read besides the source
        if (cell.cell_type == "code" and not code) or (is_readonly(cell) and not readonly):
            continue
        source = _text(cell.source)
        keep = budget.take_source(cell, len(source))
        if "attachments" in cell:
            cuts += _cut_attachments(cell, cell_name(cell, index), limits, budget)
        if keep < len(source) and not _already_cut(source, keep):
            markdown = cell.cell_type != "code"
            cell.source = _cut_text(source, keep, len(source), markdown) if markdown else \
                source[:keep] + f"\n# ... cut by the grader: {len(source):,} characters, the first {keep:,} are shown ...\n"
            cuts.append(Cut(cell_name(cell, index), "cell", len(source), keep))
    return cuts


def _cut_attachments(cell, where: str, limits: Limits, budget: _Budget) -> list[Cut]:
    """Keep a markdown cell's attachments (pasted images) that a page may show
    (``coursekit.rendering.safehtml.clean_attachments``), each within ``output_image`` and the notebook's
    output budget; a page names the others in a placeholder. Returns the images cut for size."""
    if cell.cell_type != "markdown":
        del cell["attachments"]  # only markdown cells have attachments (nbformat)
        return []
    attachments = cell.attachments if isinstance(cell.attachments, dict) else {}
    cuts = []
    sizes = {name: len(str(bundle)) for name, bundle in attachments.items()}
    kept, _ = safehtml.clean_attachments(attachments, limits.output_image)
    for name in list(kept):
        size = len(next(iter(kept[name].values())))
        if size > budget.outputs:
            del kept[name]
            cuts.append(Cut(where, "attachment", size, 0))
        else:
            budget.outputs -= size
    cuts += [Cut(where, "attachment", size, 0) for name, size in sizes.items()
             if name not in kept and size > limits.output_image]
    cell.attachments = kept
    return cuts


def cut_outputs(nb, limits: Limits = Limits(), budget: _Budget | None = None) -> list[Cut]:
    """Cut every output of ``nb`` down to the limits; returns what was cut."""
    budget = budget or _Budget(limits)
    cuts = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        where = cell_name(cell, index)
        for out in cell.get("outputs", []):
            safehtml.clean_output_fields(out)  # its metadata, before any template reads it
            longest = 0
            kept = 0
            kind = out.get("output_type")
            if kind == "stream":
                fields = [(out, "text", limits.output_text, False)]
            elif kind == "error":
                out["traceback"] = list(out.get("traceback") or [])
                fields = [(out, "evalue", limits.output_text, False)] + \
                         [(out["traceback"], i, limits.output_text, False) for i in range(len(out["traceback"]))]
            else:
                data = out.get("data", {})
                fields = []
                for mime in list(data):
                    if mime in MARKUP_KINDS:
                        fields.append((data, mime, limits.output_markup, True))
                    elif mime.startswith("image/"):
                        value = _text(data[mime])
                        if len(value) > min(limits.output_image, budget.outputs):
                            del data[mime]
                            data.setdefault("text/plain", f"[image of {len(value):,} characters removed by the grader]")
                            cuts.append(Cut(where, "output", len(value), 0))
                        else:
                            budget.outputs -= len(value)
                    else:
                        fields.append((data, mime, limits.output_text, False))
            for container, key, limit, markup in fields:
                value = container[key]
                if not isinstance(value, (str, list)):
                    continue
                value = _text(value)
                keep = budget.take_output(len(value), limit)
                if markup:
                    keep = budget.take_markup(keep, limit)
                if keep < len(value) and not _already_cut(value, keep):
                    container[key] = _cut_text(value, keep, len(value), markdown=key == "text/markdown")
                    longest, kept = max(longest, len(value)), keep
            if longest:
                cuts.append(Cut(where, "output", longest, kept))
    return cuts


class BoundedRendering(Preprocessor):
    """First preprocessor of the course's page exporters (``coursekit.rendering.pages``): the notebook is
    cut to the limits (code cells included) before anything renders it. Each cut text ends
    with a note saying so."""

    limits = Instance(Limits, args=(), help="coursekit.rendering.bounds.Limits (nbgrader_config.py: RENDER_LIMITS)").tag(config=True)

    def preprocess(self, nb, resources):
        budget = _Budget(self.limits)
        cuts = cut_sources(nb, self.limits, code=True, budget=budget) + cut_outputs(nb, self.limits, budget=budget)
        if cuts:
            self.log.warning("%s: %d cell(s) or output(s) over the size limits cut before rendering",
                             resources.get("metadata", {}).get("name", "notebook"), len(cuts))
        return nb, resources
