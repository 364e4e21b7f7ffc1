"""The similarity page (coursekit.term.similarity): a planted copy is the top pair, honest reference
submissions stay below the threshold, and hostile answers and names are shown as text.

The class: the honest reference submissions (tests/fixtures/submissions), one planted copy of
one of them, and two hostile students, autograded for real by `nbgrader autograde` but with no
code run (conftest.course_copy(execute=False)): the page reads only the cells' text, which is
the same whether the checks ran or not, so no model is trained and the class takes about a
minute.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import numpy as np
import pytest

import builder
from builder import ASSIGNMENT, Submission
from conftest import SUBMISSIONS, course_copy
from coursekit.rendering import pages
from coursekit.term import similarity
from coursekit.core.course import REPO_ROOT, Course, grading_env

SHOTS = REPO_ROOT / "build" / "screenshots"

# What an ordinary student hands in: the ordinary and the broken recipes of
# tests/fixtures/build_submissions.py. The adversarial ones are left out on purpose: several are
# made from one recipe (typed_in_results: patched-check-helpers, shadowing-coursekit,
# pre-run-cell-hook, settrace share their typed-in code), so they *are* copies of each other.
HONEST = ("all-but-training", "duplicate-cells", "exception-in-first-cell", "infinite-loop", "invalid-json",
          "late-submission", "missing-notebook", "old-nbformat-v3", "partial-misconceptions", "perfect",
          "print-50mb", "renamed-notebook", "seeds-variant-model", "stderr-warnings", "untouched-release")
COPIED = "stderr-warnings"   # the honest submission with the most code of its own (F4 written its way)
COPY = "planted-copy"

RENAMES = {"x": "arr", "unstable": "naive_exp", "exps": "shifted_exp"}
HOSTILE_ANSWER = ("</script><script>document.title='pwned-script'</script>\n"
                  "<img src=x onerror=\"document.title='pwned-img'\">\n")
HOSTILE_NAME = "<img src=x onerror=\"document.title='pwned-name'\">Mallory"


def read_submission(name: str) -> builder.Notebooks:
    folder = SUBMISSIONS / name / ASSIGNMENT
    return {p.stem: builder.read(p) for p in sorted(folder.glob("*.ipynb"))}


def rename(code: str) -> str:
    for old, new in RENAMES.items():
        code = re.sub(rf"\b{old}\b", new, code)
    return code


def planted_copy() -> Submission:
    """COPIED's answers, as a student who copied them would hand them in: every variable renamed,
    every comment rewritten, the two functions of F4 swapped, and F4's answer cell moved below
    F5's in the notebook."""
    nbs = read_submission(COPIED)
    f = nbs["fashion_mnist"]
    f4 = builder.cell(f, "f4_functions")
    source = rename(f4.source)
    source = re.sub(r"#.*", "# numerically stable version below, the naive one is for comparison", source)
    imports, relu, softmax, tail = re.split(r"\n(?=def |print)", source)
    f4.source = "\n".join([imports, softmax.rstrip() + "\n\n", relu.rstrip() + "\n\n", tail])
    f.cells.remove(f4)
    f.cells.insert(builder.index_of(f, "f5_model") + 1, f4)
    return Submission(nbs)


def hostile() -> tuple[Submission, Submission]:
    """A written and a code answer holding markup and script, and a second student who copied them."""
    nbs = builder.release()
    f = nbs["fashion_mnist"]
    builder.set_answer(f, "f4_functions", f"note = \'\'\'{HOSTILE_ANSWER}\'\'\'\n"
                                          "def relu(values):\n    return [max(v, 0) for v in values]\n")
    written = next(c for c in f.cells if c.cell_type == "markdown" and builder.grade_id(c)
                   and c.metadata["nbgrader"].get("solution"))
    written.source = HOSTILE_ANSWER + "My own words about why the model overfits on the training images."
    return Submission(nbs), Submission(copy.deepcopy(nbs))


def autograded_class(generated_course, root: Path, submissions: dict[str, Submission | Path]) -> Course:
    """``submissions`` autograded by `nbgrader autograde` in a copy of the generated course, with
    no code run (the page reads only the cells' text)."""
    course = course_copy(generated_course, root, execute=False)
    for student, sub in submissions.items():
        if isinstance(sub, Path):
            course.submit(student, sub, ASSIGNMENT)
        else:
            sub.submit(course, student)
    course.nbgrader("autograde", ASSIGNMENT, check=False, timeout=1200)
    return course


@pytest.fixture(scope="module")
def similar_class(generated_course, tmp_path_factory) -> Course:
    """The honest reference submissions and the planted copy."""
    subs = {name: SUBMISSIONS / name / ASSIGNMENT for name in HONEST}
    return autograded_class(generated_course, tmp_path_factory.mktemp("similar") / "course",
                            {**subs, COPY: planted_copy()})


@pytest.fixture(scope="module")
def hostile_class(generated_course, tmp_path_factory) -> Course:
    """Two students sharing hostile answers, one with a hostile name in the gradebook, and an honest one."""
    original, copied = hostile()
    course = autograded_class(generated_course, tmp_path_factory.mktemp("hostile") / "course",
                              {"hostile": original, "hostile-copy": copied,
                               "perfect": SUBMISSIONS / "perfect" / ASSIGNMENT})
    with course.layout.gradebook() as gb:
        gb.update_or_create_student("hostile", first_name=HOSTILE_NAME, last_name="</td></tr></table>")
    return course


def honest_pairs(comparison: similarity.ClassComparison) -> list[similarity.Pair]:
    return [p for p in comparison.pairs if p.a in HONEST and p.b in HONEST]


class Page(HTMLParser):
    """The tags and attributes of a page, the text of the pair table's rows, and of each answer
    shown side by side (with the text inside <mark>)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.rows: list[list[str]] = []
        self.answers: list[dict] = []  # {"text", "marked"}
        self._row = self._cell = self._answer = None
        self._in_table = self._in_mark = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "table":
            self._in_table = attrs.get("id") == "pair-table"
        elif tag == "tr" and self._in_table:
            self._row = []
            self.rows.append(self._row)
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "pre" and "answer" in attrs.get("class", ""):
            self._answer = {"text": "", "marked": [], "side": attrs["class"].split()[-1]}
            self.answers.append(self._answer)
        elif tag == "mark" and self._answer is not None:
            self._in_mark = True
            self._answer["marked"].append("")

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._in_table, self._row = False, None
        elif tag == "pre":
            self._answer = None
        elif tag == "mark":
            self._in_mark = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._answer is not None:
            self._answer["text"] += data
            if self._in_mark:
                self._answer["marked"][-1] += data


def parse(html_text: str) -> Page:
    page = Page()
    page.feed(html_text)
    return page


def live_markup(page: Page) -> list[tuple[str, dict]]:
    """Elements that run or load something: scripts, images, frames, event handlers."""
    return [(tag, attrs) for tag, attrs in page.tags
            if tag in ("script", "img", "iframe", "object", "embed", "svg") or any(a.startswith("on") for a in attrs)]


# --- without a course: the comparison itself -------------------------------------------------------

NO_BOILERPLATE = {similarity.CODE: np.array([], dtype=np.int64), similarity.WRITTEN: np.array([], dtype=np.int64)}


def pieces(student: str, cells: dict[str, str]) -> list[similarity.Piece]:
    found = []
    for name, text in cells.items():
        kind = similarity.WRITTEN if name.startswith("why") else similarity.CODE
        fp, index = similarity.fingerprint(text, kind, NO_BOILERPLATE[kind])
        found.append(similarity.Piece(student, "nb", name, kind, text, fp, index))
    return found


ORIGINAL = {
    "train": "history = model.fit(images, labels, epochs=5, validation_split=0.25)\n"
             "best = max(history.history['val_accuracy'])  # the best epoch\n"
             "print(f'best validation accuracy {best:.3f}')\n",
    "scale": "def normalise(batch):\n    batch = batch.astype('float32')\n    return (batch - batch.mean()) / batch.std()\n",
    "why": "The validation accuracy stops rising after the third epoch, so the model starts to memorise.",
}
REWRITTEN = {  # renamed, comments changed, cells swapped, the prose re-spaced and re-cased
    "scale": "h = mdl.fit(x, y, epochs=5, validation_split=0.25)   # train it\n"
             "top = max(h.history['val_accuracy'])\nprint(f'best validation accuracy {top:.3f}')\n",
    "train": "def standardise(arr):\n    arr = arr.astype('float32')  # floats\n    return (arr - arr.mean()) / arr.std()\n",
    "why": "the validation  accuracy stops rising after the THIRD epoch, so the model starts to memorise!",
}
OWN = {
    "train": "for epochs in (1, 3, 10):\n    run = build().fit(images, labels, epochs=epochs, verbose=0)\n"
             "    print(epochs, run.history['loss'][-1])\n",
    "why": "Dropout would help: the gap between training and validation loss grows with every epoch.",
}


def test_renamed_reordered_recommented_answers_still_match():
    pair = similarity.compare("a", pieces("a", ORIGINAL), "b", pieces("b", REWRITTEN))
    assert pair.share_a > 0.95 and pair.share_b > 0.95, pair
    other = similarity.compare("a", pieces("a", ORIGINAL), "c", pieces("c", OWN))
    assert other.score < 0.2, other
    matches = similarity.cell_matches(pieces("a", ORIGINAL), pieces("b", REWRITTEN))
    assert {(m.a.cell, m.b.cell) for m in matches} == {("train", "scale"), ("scale", "train"), ("why", "why")}
    why = next(m for m in matches if m.a.cell == "why")
    assert [why.b.text[s:e] for s, e in why.spans_b][0].startswith("the validation  accuracy")


def test_highlight_escapes_every_character_then_marks():
    text = "x = '<img src=x onerror=alert(1)>' & y"
    start = text.index("<img")
    shown = str(similarity.highlight(text, [(start, start + 4), (0, 1)]))
    assert shown == "<mark>x</mark> = &#39;<mark>&lt;img</mark> src=x onerror=alert(1)&gt;&#39; &amp; y"


# --- calibration ------------------------------------------------------------------------------


def test_calibration_on_the_reference_class(similar_class, capsys, monkeypatch):
    """The threshold (similarity.THRESHOLD) is far above every honest pair and below the copy;
    without the course's code as boilerplate, the honest pairs are indistinguishable from it."""
    comparison = similarity.compare_class(similar_class.layout, ASSIGNMENT)
    honest = honest_pairs(comparison)
    compared = sorted({s for p in honest for s in (p.a, p.b)})
    top = max(honest, key=lambda p: p.score)
    copy = next(p for p in comparison.pairs if {p.a, p.b} == {COPIED, COPY})
    with capsys.disabled():
        print(f"\ncalibration: {len(compared)} honest reference submissions, {len(honest)} pairs; "
              f"highest honest score {top.score:.3f} ({top.a} / {top.b}, {top.shared} characters shared); "
              f"planted copy {copy.score:.3f} ({copy.shared} characters shared); threshold {similarity.THRESHOLD}, "
              f"at least {similarity.MIN_SHARED} characters")
    assert len(compared) >= 12, compared
    assert top.score < similarity.THRESHOLD and not any(p.flagged for p in honest)
    assert copy.flagged and copy.score > 0.9

    # The defence off: the course's code is not boilerplate (only its released stubs are), so the
    # honest students' tutorial code counts as shared and the planted copy drowns among them.
    monkeypatch.setattr(similarity, "boilerplate_hashes", _release_only)
    naive = similarity.compare_class(similar_class.layout, ASSIGNMENT)
    naive_honest = honest_pairs(naive)
    naive_top = max(naive_honest, key=lambda p: p.score)
    with capsys.disabled():
        print(f"without the instructor's code as boilerplate: highest honest score {naive_top.score:.3f}, "
              f"{sum(p.flagged for p in naive_honest)} of {len(naive_honest)} honest pairs flagged")
    assert naive_top.score > 0.9 and sum(p.flagged for p in naive_honest) > 10


def _release_only(layout, assignment):
    """Boilerplate from the released notebooks only (what copydetect's boilerplate_dirs would be
    given if one pointed it at release/)."""
    import numpy as np

    found = {similarity.CODE: [], similarity.WRITTEN: []}
    for path in sorted(layout.release(assignment).glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            kind = similarity.cell_kind(cell)
            if kind:
                fp, _ = similarity.fingerprint(similarity._text(cell.source), kind, window=1)
                found[kind].extend(fp.hashes)
    return {k: np.unique(np.array(v, dtype=np.int64)) for k, v in found.items()}


# --- the page -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def similar_page(similar_class) -> dict:
    path = similarity.write_report(similar_class.layout, ASSIGNMENT)
    html_text = path.read_text(encoding="utf-8")
    return {"path": path, "html": html_text, "page": parse(html_text)}


def test_page_goes_beside_the_class_report(similar_page, similar_class):
    assert similar_page["path"] == similar_class.root / "reports" / ASSIGNMENT / "similarity.html"
    policy = [a["content"] for tag, a in similar_page["page"].tags
              if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert policy == [pages.REPORT_CSP]
    assert "Triage for a person, never a penalty" in similar_page["html"]


def test_planted_copy_is_the_top_pair(similar_page):
    rows = similar_page["page"].rows[1:]
    top = rows[0]
    assert {top[1].strip(), top[2].strip()} == {COPIED, COPY} and top[7] == "look at it", rows[:3]
    flagged = [r for r in rows if r[7] == "look at it"]
    assert len(flagged) == 1, flagged  # no honest pair is flagged
    for row in rows[1:]:
        assert float(row[3]) < similarity.THRESHOLD, row


def test_copied_code_is_marked_side_by_side(similar_page):
    """The first pair's cells side by side: the copy's renamed code and the original's are both
    marked (tokens compared, not names), and the copy's moved cell is matched by grade id."""
    page, html_text = similar_page["page"], similar_page["html"]
    first = html_text.split('id="pair-1"')[1].split("</article>")[0]
    answers = parse("<pre" + first.split("<pre", 1)[1]).answers if "<pre" in first else []
    assert len(answers) >= 2
    by_side = {a["side"]: a for a in answers[:2]}
    copied_side = next(a for a in by_side.values() if "naive_exp" in a["text"])
    original_side = next(a for a in by_side.values() if "unstable" in a["text"])
    assert any("naive_exp = np.exp(arr)" in m for m in copied_side["marked"]), copied_side["marked"]
    assert any("unstable = np.exp(x)" in m for m in original_side["marked"]), original_side["marked"]
    for side in (copied_side, original_side):
        marked = sum(len(m) for m in side["marked"])
        assert marked > 0.6 * len(side["text"]), (marked, len(side["text"]))
    assert "f4_functions" in first


def test_hostile_answers_and_names_are_shown_as_text(hostile_class):
    path = similarity.write_report(hostile_class.layout, ASSIGNMENT)
    html_text = path.read_text(encoding="utf-8")
    page = parse(html_text)
    assert live_markup(page) == [], live_markup(page)
    shown = "\n".join(a["text"] for a in page.answers)
    assert "</script><script>document.title='pwned-script'</script>" in shown
    assert "<img src=x onerror=\"document.title='pwned-img'\">" in shown
    names = " ".join(" ".join(r) for r in page.rows)
    assert HOSTILE_NAME in names and "</td></tr></table>" in names
    # the hostile pair's answers are listed, side by side, with their markup marked as text
    assert any("pwned-img" in m for a in page.answers for m in a["marked"])


def test_copydetect_own_report_would_run_it(tmp_path):
    """The defence off: copydetect's HTML report (a Jinja template without autoescape) puts the
    file names of the class into the page as markup: a folder named like HOSTILE_NAME becomes a
    live <img onerror>. The course never writes that report."""
    from copydetect import CopyDetector

    code = "def relu(values):\n    return [max(v, 0) for v in values]\n\n\nprint(relu([1, -2, 3, -4, 5]))\n"
    for student in ("alice", HOSTILE_NAME.replace("/", "")):
        (tmp_path / student).mkdir()
        (tmp_path / student / "f4.py").write_text(code)
    detector = CopyDetector(test_dirs=[str(tmp_path)], extensions=["py"], noise_t=10, guarantee_t=10,
                            display_t=0.1, autoopen=False, silent=True, out_file=str(tmp_path / "report.html"))
    detector.run()
    live = live_markup(parse(detector.generate_html_report(output_mode="return")))
    assert any(tag == "img" and "onerror" in attrs for tag, attrs in live), live


@pytest.mark.browser
def test_pages_in_headless_chromium(similar_page, hostile_class):
    """Both pages in Chromium: nothing a student wrote runs (the title the payloads would change
    stays), the hostile text is on screen as text, the copy's pair is first. Screenshots:
    build/screenshots/similarity/."""
    import browser

    if not browser.available():
        pytest.fail("chromium and chromedriver are needed: run bin/setup")
    hostile_page = similarity.write_report(hostile_class.layout, ASSIGNMENT)
    with browser.Browser.start(screenshots=SHOTS / "similarity", width=1400, height=1000) as b:
        b.open(similar_page["path"].as_uri())
        assert b.driver.title == f"{ASSIGNMENT}: similar answers"
        b.shot("01-pairs")
        b.scroll_to(b.find("#pair-1"), block="start")
        b.shot("02-top-pair-side-by-side")
        first = b.script("return document.querySelector('#pair-table tbody tr').dataset")
        assert {first["a"], first["b"]} == {COPIED, COPY}

        b.open(hostile_page.as_uri())
        b.shot("03-hostile-pairs")
        b.scroll_to(b.find("#pair-1"), block="start")
        b.shot("04-hostile-side-by-side")
        assert b.driver.title == f"{ASSIGNMENT}: similar answers"  # no payload ran
        assert b.script("return document.querySelectorAll('img, script').length") == 0
        text = b.text()
        assert "onerror=\"document.title='pwned-img'\"" in text and "pwned-name" in text
