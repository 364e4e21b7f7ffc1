"""The sanitiser policy (coursekit.rendering.safehtml), the size limits (coursekit.rendering.bounds) and the course's
notebook pages (coursekit.rendering.pages), without a browser: what each page's HTML would run.

The browser test (test_ta_pages.py) shows the same pages in Chromium; these show the policy
item by item, and each defence against stock nbgrader's page from the same notebook.
"""

from __future__ import annotations

import base64
import copy
import html.parser
from pathlib import Path

import nbformat
import pytest
from nbconvert.exporters import HTMLExporter
from nbconvert.filters import markdown2html

from builder import cell, release, set_answer
from coursekit.rendering import bounds, safehtml
from coursekit.rendering.pages import FeedbackExporter, FormgradeExporter
from hostile_pages import BOMB_UNIT, Payloads, output_cell, written_answer

NBGRADER_TEMPLATES = Path(__import__("nbgrader").__file__).parent / "server_extensions" / "formgrader" / "templates"
CANARY = "http://127.0.0.1:9"


class Active(html.parser.HTMLParser):
    """What in a page would run or fetch: inline scripts, event handlers, frames, objects,
    javascript: links, remote images and CSS url()."""

    def __init__(self, page: str):
        super().__init__()
        self.found: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        # (a data island and MathJax's configuration are not run by the browser)
        if tag == "script" and "src" not in attrs and attrs.get("type") not in ("application/json", "text/x-mathjax-config"):
            self.found.append("inline <script>")
        if tag in ("iframe", "object", "embed", "svg", "base", "form", "meta") and \
                not (tag == "meta" and set(attrs) <= {"charset", "http-equiv", "content", "name"}):
            self.found.append(f"<{tag}>")
        for name, value in attrs.items():
            value = value or ""
            if name.startswith("on"):
                self.found.append(f"{tag} {name}=")
            if name in ("href", "src") and value.strip().lower().startswith("javascript:"):
                self.found.append(f"{tag} {name}=javascript:")
            if name == "src" and tag == "img" and CANARY in value:
                self.found.append("remote <img>")
            if name == "style" and "url(" in value:
                self.found.append("style url()")


def active(page: str) -> list[str]:
    return Active(page).found


def hostile_notebook(bomb: int = 0):
    nb = release()["fashion_mnist"]
    p = Payloads(CANARY)
    set_answer(nb, "f2_why_split", written_answer(p))
    c = cell(nb, "f1_show")
    c.source = output_cell(p)
    shown = {"text/html": "<b>bold</b><img src=x onerror='alert(1)'>",
             "text/markdown": "*md* <img src=x onerror='alert(2)'>",
             "application/javascript": "alert(3)"}
    c.outputs = [nbformat.v4.new_output("display_data", data={"text/plain": "x", **shown})]
    c.metadata["nbgrader"]["comment"] = "<img src=x onerror='alert(4)'>"
    if bomb:
        set_answer(nb, "f6_roles", (BOMB_UNIT * (bomb // len(BOMB_UNIT) + 1))[:bomb])
    return nb


FORMGRADE_RESOURCES = {"base_url": "/", "submission_id": "s1", "index": 0, "total": 1,
                       "assignment_id": "week2", "notebook_id": "fashion_mnist",
                       "student": "<img src=x onerror='alert(5)'>", "first_name": None, "last_name": None,
                       "notebook_path": "./autograded/x/week2/fashion_mnist.ipynb"}


# --- the policy -------------------------------------------------------------------------------


@pytest.mark.parametrize("dirty", [
    "<img src=x onerror=alert(1)>", "<script>alert(1)</script>", "<svg onload=alert(1)></svg>",
    '<iframe srcdoc="<script>alert(1)</script>"></iframe>', '<a href="javascript:alert(1)">x</a>',
    '<img src="http://127.0.0.1:9/pixel">', '<div style="background:url(http://127.0.0.1:9/x)">x</div>',
    '<object data="x.swf"></object>', '<base href="http://127.0.0.1:9/">', '<form action="/api"><input></form>',
])
def test_the_policy_shows_active_html_as_text(dirty):
    clean = safehtml.clean_html(dirty)
    assert active(clean) == [], clean
    assert active(dirty) != []  # the test would see it


def test_the_policy_keeps_math_images_tables_and_highlighting():
    png = "data:image/png;base64,iVBORw0KGgo="
    source = (f"Softmax $e^{{x_i}} / \\sum_j e^{{x_j}}$ and $$a < b$$\n\n![plot]({png})\n\n"
              "| a | b |\n| :-- | --: |\n| 1 | 2 |\n\n```python\nif a < b:\n    print('x')\n```\n")
    clean = safehtml.clean_html(markdown2html(source))
    assert "e^{x_i}" in clean and "\\sum_j" in clean  # math stays TeX for the renderer
    assert f'src="{png}"' in clean
    assert "<table>" in clean and "<td" in clean
    assert 'class="k"' in clean or 'class="kn"' in clean or '<span class="k">' in clean  # Pygments' tokens


def test_ids_and_page_classes_are_dropped():
    clean = safehtml.clean_html('<p id="statusmessage" class="score comment">x</p><span class="k">if</span>')
    assert "statusmessage" not in clean and "score" not in clean
    assert '<span class="k">' in clean


def test_quoted_markdown_reads_as_the_text_it_quotes():
    name = "<img src=x onerror='alert(1)'> *bold* [link](javascript:alert(1))"
    rendered = markdown2html(safehtml.quote_markdown(name))
    assert active(rendered) == []
    assert "<img src=x onerror='alert(1)'>" in html.unescape(rendered.replace("<p>", "").replace("</p>", ""))


def test_nested_markup_that_changes_meaning_when_parsed_again_is_escaped():
    clean = safehtml.clean_html("<math><mtext><style><img src=x onerror=alert(1)></style></mtext></math>")
    assert active(clean) == [] and "<math" not in clean and "<style" not in clean


def feedback_resources() -> dict:
    return {"nbgrader": {"notebook": "fashion_mnist", "score": 0.0, "max_score": 43.0, "late_penalty": 0.0}}


# --- the pages --------------------------------------------------------------------------------


def stock_formgrade_page(nb) -> str:
    """nbgrader 0.9.6's formgrader view of ``nb``, configured as nbgrader configures it."""
    exporter = HTMLExporter(template_name="formgrade", extra_template_basedirs=[str(NBGRADER_TEMPLATES)])
    return exporter.from_notebook_node(nb, resources=dict(FORMGRADE_RESOURCES, base_url=""))[0]


def test_stock_formgrader_page_runs_the_payloads():
    found = active(stock_formgrade_page(hostile_notebook()))
    assert "img onerror=" in found and "inline <script>" in found


def test_the_course_formgrader_page_runs_nothing():
    page, _ = FormgradeExporter().from_notebook_node(hostile_notebook(), resources=dict(FORMGRADE_RESOURCES))
    assert active(page) == []
    assert "My answer: we split the data" in page
    assert "&lt;img src=x onerror=" in page  # shown as text
    assert 'class="score tabbable" id="f2_why_split"' in page  # formgrader's form is whole


def test_the_course_feedback_page_runs_nothing_and_keeps_the_graders_own_html(tmp_path):
    nb = hostile_notebook()
    for c in nb.cells:  # as nbgrader's GetGrades leaves them
        meta = c.metadata.get("nbgrader", {})
        if meta.get("grade") or meta.get("task"):
            meta["score"] = 0.0
    nb.cells.insert(0, nbformat.v4.new_markdown_cell('<div id="coursekit-summary">forged</div>'))
    page, resources = FeedbackExporter().from_notebook_node(nb, resources=feedback_resources())
    assert active(page) == []
    assert 'id="coursekit-summary"' not in page  # a student's cell cannot pass for the grader's
    assert "Content-Security-Policy" in page

    trusted = {"coursekit": {"trusted": "not-this-page's-token"}}
    nb.cells.insert(0, nbformat.v4.new_markdown_cell('<div id="coursekit-summary">guess</div>', metadata=trusted))
    page, _ = FeedbackExporter().from_notebook_node(nb, resources=feedback_resources())
    assert 'id="coursekit-summary"' not in page


# --- size limits ------------------------------------------------------------------------------


def test_a_markdown_bomb_is_cut_with_a_note_before_rendering():
    nb = hostile_notebook(bomb=2_500_000)
    limits = bounds.Limits()
    cuts = bounds.cut_sources(nb, limits, code=True)
    assert [(c.where, c.size, c.kept) for c in cuts] == [("f6_roles", 2_500_000, limits.cell_source)]
    assert "cut by the grader: 2,500,000 characters" in cell(nb, "f6_roles").source
    assert len(cell(nb, "f6_roles").source) < limits.cell_source + 200


def test_outputs_are_cut_and_large_images_removed():
    nb = release()["fashion_mnist"]
    c = cell(nb, "f1_show")
    c.outputs = [nbformat.v4.new_output("stream", name="stdout", text="x" * 300_000),
                 nbformat.v4.new_output("display_data", data={"text/html": "<p>" + "y" * 50_000,
                                                              "image/png": "A" * 3_000_000, "text/plain": "z"})]
    cuts = bounds.cut_outputs(nb, bounds.Limits())
    assert len(c.outputs[0].text) < 100_200 and "output cut by the grader" in c.outputs[0].text
    assert "image/png" not in c.outputs[1].data and len(c.outputs[1].data["text/html"]) < 20_200
    assert {cut.where for cut in cuts} == {"f1_show"}


def test_the_whole_notebook_has_a_budget():
    nb = release()["fashion_mnist"]
    for gid in ("f2_why_split", "f6_roles", "f7_why_lower", "f8_meaning", "f10_why_no_softmax"):
        set_answer(nb, gid, "w" * 19_000)
    limits = bounds.Limits(notebook_markup=50_000)
    bounds.cut_sources(nb, limits)
    kept = sum(len(cell(nb, g).source) for g in ("f2_why_split", "f6_roles", "f7_why_lower", "f8_meaning",
                                                  "f10_why_no_softmax"))
    assert kept < 50_000 + 5 * 200
    original = release()["fashion_mnist"]
    assert [c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("locked")] == \
        [c.source for c in original.cells if c.metadata.get("nbgrader", {}).get("locked")]  # the release's cells whole


def test_a_cut_text_is_not_cut_again_when_rendered():
    nb = hostile_notebook(bomb=2_500_000)
    bounds.cut_sources(nb, bounds.Limits())
    once = cell(nb, "f6_roles").source
    assert bounds.cut_sources(nb, bounds.Limits(), code=True) == []
    assert cell(nb, "f6_roles").source == once


# --- what templates read from metadata (coursekit.rendering.safehtml.clean_output_fields, clean_cell_fields)

PNG_1PX = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP4//8/AAX+Av6n1qTyAAAAAElFTkSuQmCC")
COVER = "position:fixed;top:0;left:0;width:100vw;height:100vh;z-index:99999"


def metadata_notebook():
    """An answer cell whose outputs' and cell's metadata carry what nbconvert's templates write
    into the page as it is: an image's width and height (unquoted), its file name (its src), an
    isolated HTML output (an iframe), a cell tag (a class name) and the execution count (text)."""
    nb = release()["fashion_mnist"]
    c = cell(nb, "f1_show")
    c.outputs = [
        nbformat.v4.new_output("display_data", data={"image/png": PNG_1PX, "text/plain": "a"}, metadata={
            "image/png": {"width": f"100% style={COVER}", "height": "1 onload=alert(1)", "unconfined": "x y"}}),
        nbformat.v4.new_output("display_data", data={"image/jpeg": PNG_1PX, "text/plain": "b"}, metadata={
            "width": "1 onerror=alert(2)", "filenames": {"image/jpeg": f"{CANARY}/metadata-src"}}),
        nbformat.v4.new_output("display_data", data={"text/html": "<b>isolated</b>"},
                               metadata={"text/html": {"isolated": True}}),
        nbformat.v4.new_output("execute_result", data={"image/png": PNG_1PX}, execution_count=3,
                               metadata={"image/png": {"width": 120, "height": 80.0, "unconfined": True}}),
    ]
    c.metadata["tags"] = ["ok-tag", "x navbar-fixed-top"]
    return nb


def _attributes(page: str, tag: str) -> list[dict]:
    found = []

    class Parser(html.parser.HTMLParser):
        def handle_starttag(self, name, attrs):
            if name == tag:
                found.append(dict(attrs))

    Parser().feed(page)
    return found


def test_stock_pages_write_hostile_output_metadata_into_the_page():
    page = stock_formgrade_page(metadata_notebook())
    found = active(page)
    assert "img onload=" in found and "img onerror=" in found and "remote <img>" in found
    assert any(COVER in (a.get("style") or "") for a in _attributes(page, "img"))  # covers the window
    assert "<iframe" in page and "celltag_x navbar-fixed-top" in page


@pytest.mark.parametrize("exporter", [FormgradeExporter, FeedbackExporter])
def test_the_course_pages_keep_only_checked_metadata(exporter):
    nb = metadata_notebook()
    for c in nb.cells:
        meta = c.metadata.get("nbgrader", {})
        if meta.get("grade") or meta.get("task"):
            meta["score"] = 0.0
    resources = dict(FORMGRADE_RESOURCES) if exporter is FormgradeExporter else feedback_resources()
    page, _ = exporter().from_notebook_node(nb, resources=resources)
    assert active(page) == [], active(page)
    images = [a for a in _attributes(page, "img") if (a.get("src") or "").startswith("data:image/")]
    assert not any(COVER in (a.get("style") or "") for a in _attributes(page, "img"))
    assert {"width": "120", "height": "80"} in [{k: a[k] for k in ("width", "height") if k in a} for a in images]
    assert "isolated-iframe" not in page and "celltag_x" not in page and "celltag_ok-tag" in page


def test_metadata_is_checked_where_outputs_are_cut():
    """At autograde (coursekit.submissions.sanitize calls bounds.cut_outputs and cut_sources) as in the pages."""
    nb = metadata_notebook()
    bounds.cut_outputs(nb, bounds.Limits())
    bounds.cut_sources(nb, bounds.Limits(), code=True)
    c = cell(nb, "f1_show")
    assert [dict(o.get("metadata", {})) for o in c.outputs] == [
        {}, {}, {}, {"image/png": {"width": 120, "height": 80, "unconfined": True}}]
    assert c.metadata["tags"] == ["ok-tag"]


def test_fields_of_the_wrong_type_are_dropped():
    """What a hand-edited notebook can hold (nbgrader reads notebooks that fail validation)."""
    c = nbformat.from_dict({"cell_type": "code", "source": "x", "outputs": [],
                            "execution_count": "<img src=x onerror=alert(3)>",
                            "metadata": {"tags": ["ok", {"not": "text"}, "a b"], "alt": ["x"],
                                         "transient": {"remove_source": True}}})
    out = nbformat.from_dict({"output_type": "execute_result", "data": {"image/png": PNG_1PX},
                              "metadata": ["not", "a", "mapping"], "execution_count": "<b>1</b>",
                              "svg_filename": f"{CANARY}/svg"})
    safehtml.clean_cell_fields(c)
    safehtml.clean_output_fields(out)
    assert c.metadata == {"tags": ["ok"]} and c.execution_count is None
    assert out.metadata == {} and out.execution_count is None and "svg_filename" not in out


# --- pasted images (markdown attachments) -------------------------------------------------------

SVG_SCRIPT = base64.b64encode(b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)">'
                              b'<script>alert(2)</script></svg>').decode()
HOSTILE_ATTACHMENTS = {
    "image.png": {"image/png": PNG_1PX},  # what JupyterLab stores for a pasted screenshot
    "evil.svg": {"image/svg+xml": SVG_SCRIPT},
    "page.html": {"text/html": base64.b64encode(b"<script>alert(3)</script>").decode()},
    "bad.png": {"image/png": 'x" onerror="alert(4)'},
    "fake.png": {"image/png": base64.b64encode(b"<script>alert(5)</script>").decode()},  # not a PNG
    "huge.png": {"image/png": "iVBORw0KGgo" + "A" * 2_100_000},
    "list.png": ["not", "a", "bundle"],
    'odd" onerror="alert(6) name.png': {"image/png": PNG_1PX},
}


def attachment_notebook(attachments=None):
    nb = release()["fashion_mnist"]
    names = list((attachments or HOSTILE_ATTACHMENTS))
    refs = " ".join(f"![{i}](<attachment:{name}>)" for i, name in enumerate(names))
    set_answer(nb, "f2_why_split", f"My screenshot: {refs} ![gone](attachment:missing.png)\n")
    cell(nb, "f2_why_split").attachments = copy.deepcopy(attachments or HOSTILE_ATTACHMENTS)
    for c in nb.cells:
        meta = c.metadata.get("nbgrader", {})
        if meta.get("grade") or meta.get("task"):
            meta["score"] = 0.0
    return nb


def test_nbconverts_markdown_filter_fails_a_page_on_an_attachment_it_cannot_find():
    """Why formgrader answered HTTP 500: the course's macro rendered markdown without the cell's
    attachments, and nbconvert raises for an attachment it does not know."""
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    with pytest.raises(Exception, match="missing attachment"):
        MarkdownWithMath(renderer=IPythonRenderer(escape=False, attachments={})).render(
            "![image.png](attachment:image.png)")


def test_stock_formgrader_fails_on_a_pasted_image_that_is_not_there():
    """A reference to an attachment the cell does not hold: stock formgrader answers HTTP 500
    and stock feedback skips the student; the course's pages name it (next test)."""
    nb = attachment_notebook({"image.png": {"image/png": PNG_1PX}})
    with pytest.raises(Exception, match="missing attachment: missing.png"):
        stock_formgrade_page(nb)


@pytest.mark.parametrize("exporter", [FormgradeExporter, FeedbackExporter])
def test_pasted_images_are_shown_and_hostile_ones_named(exporter):
    resources = dict(FORMGRADE_RESOURCES) if exporter is FormgradeExporter else feedback_resources()
    page, _ = exporter().from_notebook_node(attachment_notebook(), resources=resources)
    assert active(page) == [], active(page)
    sources = [a.get("src") or "" for a in _attributes(page, "img")]
    assert f"data:image/png;base64,{PNG_1PX}" in sources  # the pasted screenshot
    assert not any(s.startswith("data:image/svg") or "text/html" in s or "alert" in s for s in sources)
    assert sources.count(f"data:image/png;base64,{PNG_1PX}") == 2  # and the one with an odd name
    text = html.unescape(page)
    for shown in ("evil.svg", "page.html", "bad.png", "fake.png", "huge.png", "list.png", "missing.png"):
        assert f"[pasted image '{shown}' not shown" in text, shown
    assert len(page) < 1_000_000  # the huge one is not in the page


def test_a_ta_comment_that_names_an_attachment_does_not_break_the_feedback_page():
    nb = attachment_notebook({"image.png": {"image/png": PNG_1PX}})
    cell(nb, "f2_why_split").metadata["nbgrader"]["comment"] = "see ![x](attachment:image.png)"
    page, _ = FeedbackExporter().from_notebook_node(nb, resources=feedback_resources())
    assert "[pasted image 'image.png' not shown" in html.unescape(page)  # a comment has no attachments


def test_attachments_are_checked_and_bounded_where_cells_are_cut():
    nb = attachment_notebook()
    cuts = bounds.cut_sources(nb, bounds.Limits(), readonly=False)
    kept = cell(nb, "f2_why_split").attachments
    assert set(kept) == {"image.png", 'odd" onerror="alert(6) name.png'}
    assert [(c.what, c.where) for c in cuts] == [("attachment", "f2_why_split")]  # huge.png, for size
    assert "pasted image" in cuts[0].note()
