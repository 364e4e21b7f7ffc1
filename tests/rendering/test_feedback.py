"""Student feedback: the plain `nbgrader generate_feedback week2` (configured in
nbgrader_config.py to run coursekit.rendering.feedback) teaches without giving the hidden checks away.

Two graded classes are used: the shared fixture class (tests/fixtures/submissions, graded
once per session), and a one-student class made here from the release with known mistakes,
so that the hidden-check hints, public messages, problems and late penalty are checked
against what a real autograde produced.
"""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

import builder
from builder import ASSIGNMENT, NOTEBOOKS, REPO, Submission
from conftest import REGIONS as ALL_REGIONS
from conftest import region_lines
from coursekit.core import problems
from coursekit.core.course import Course
from coursekit.core.notebook import grade_id, question_of

SOURCE = REPO.source(ASSIGNMENT)
RELEASE = REPO.release(ASSIGNMENT)
REGIONS = {kind: ALL_REGIONS[kind] for kind in ("hidden test", "mark scheme")}
REDACTED = "line removed from feedback"


# --- what must never reach a student -------------------------------------------------


def collapse(text: str) -> str:
    return " ".join(text.split())


def secret_lines() -> dict[str, set[str]]:
    """Every line of hidden test code and of mark schemes in the source notebooks, except
    lines that the release itself shows (short or generic ones, like `_ours = ...`, are kept:
    they are code a student has never seen)."""
    shown = set()
    for name in NOTEBOOKS:
        for cell in nbformat.read(RELEASE / f"{name}.ipynb", as_version=4).cells:
            shown.update(collapse(line) for line in cell.source.split("\n"))
    secrets = {kind: set() for kind in REGIONS}
    for name in NOTEBOOKS:
        for cell in nbformat.read(SOURCE / f"{name}.ipynb", as_version=4).cells:
            for kind, (begin, end) in REGIONS.items():
                secrets[kind].update(collapse(line) for line in region_lines(cell.source, begin, end))
    return {kind: {s for s in lines if len(s) >= 8 and s not in shown} for kind, lines in secrets.items()}


SECRETS = secret_lines()


class _Page(HTMLParser):
    """Visible text of a page, and the text of every element carrying a given attribute."""

    def __init__(self, attr: str = "data-grade-id"):
        super().__init__(convert_charrefs=True)
        self.attr, self.text, self.skip = attr, [], 0
        self.stack: list[tuple[str, dict, list]] = []
        self.elements: list[tuple[dict, str]] = []

    def handle_starttag(self, tag, attrs):
        if tag in ("style", "script"):
            self.skip += 1
        if tag in ("br", "img", "meta", "link", "input", "hr"):
            return
        attrs = dict(attrs)
        self.stack.append((tag, attrs, []))

    def handle_endtag(self, tag):
        if tag in ("style", "script"):
            self.skip -= 1
        while self.stack:
            name, attrs, parts = self.stack.pop()
            if self.attr in attrs:
                self.elements.append((attrs, collapse("".join(parts))))
            if self.stack:
                self.stack[-1][2].extend(parts)
            if name == tag:
                break

    def handle_data(self, data):
        if self.skip:
            return
        self.text.append(data)
        if self.stack:
            self.stack[-1][2].append(data)


def page(path: Path, attr: str = "data-grade-id") -> _Page:
    parsed = _Page(attr)
    parsed.feed(path.read_text(encoding="utf-8"))
    parsed.close()
    return parsed


def visible_text(path: Path) -> str:
    return collapse("".join(page(path).text))


def leaks(path: Path) -> dict[str, list[str]]:
    """Secret lines that a reader of the page can see. The page's text is compared, not its
    markup: highlighted code is split into <span>s, so a search of the raw HTML would miss it."""
    text = visible_text(path)
    return {kind: sorted(s for s in lines if s in text) for kind, lines in SECRETS.items()}


def boxes(path: Path) -> dict[str, tuple[dict, str]]:
    """grade id -> (attributes, text) of the verdict shown under each check cell."""
    found = {}
    for attrs, text in page(path).elements:
        assert attrs["data-grade-id"] not in found, f"two verdicts for {attrs['data-grade-id']} in {path}"
        found[attrs["data-grade-id"]] = (attrs, text)
    return found


# --- the graded classes --------------------------------------------------------------


def feedback_pages(course: Course) -> dict[tuple[str, str], Path]:
    """(student, notebook) -> the feedback page of every autograded notebook."""
    layout = course.layout
    return {(student, nb.stem): layout.feedback(student, ASSIGNMENT) / f"{nb.stem}.html"
            for student in layout.students(ASSIGNMENT) for nb in sorted(layout.autograded(student, ASSIGNMENT).glob("*.ipynb"))}


@pytest.fixture(scope="module")
def class_feedback(graded_class) -> dict[tuple[str, str], Path]:
    """Feedback of the fixture class: the plain command (it skips pages already generated)."""
    graded_class.course.nbgrader("generate_feedback", ASSIGNMENT)
    return feedback_pages(graded_class.course)


MISTAKES = {
    "fashion_mnist": {
        # public check: len(None) -> TypeError shown; hidden: list(None) -> generic hint
        "f1_load": "(train_images, train_labels), (test_images, test_labels) = load_fashion_mnist()\n"
                   "class_names = None\n",
        # floats, but never divided by 255
        "f3_scale": "train_images = train_images * 1.0\ntest_images = test_images * 1.0\n",
        # np.roll wraps the right edge around
        "f3_augment": "def augment(image):\n"
                      "    image = np.asarray(image, dtype=float)\n"
                      "    return image[:, ::-1].copy(), np.roll(image, 4, axis=1), 1.0 - image\n\n\n"
                      "fig_augmented = plt.figure(figsize=(8, 2))\n"
                      "for k, picture in enumerate([train_images[0], *augment(train_images[0])]):\n"
                      "    plt.subplot(1, 4, k + 1)\n"
                      "    plt.imshow(picture, cmap=plt.cm.binary)\n"
                      "plt.show()\n",
        # softmax without subtracting the maximum overflows
        "f4_functions": "def relu(x):\n    return np.maximum(np.asarray(x, dtype=float), 0.0)\n\n\n"
                        "def softmax(x):\n    exps = np.exp(np.asarray(x, dtype=float))\n"
                        "    return exps / np.sum(exps, axis=-1, keepdims=True)\n",
        # no softmax on the output layer
        "f5_model": "model = tf.keras.Sequential([tf.keras.Input(shape=(28, 28)), tf.keras.layers.Flatten(),\n"
                    "                             tf.keras.layers.Dense(128, activation='relu'),\n"
                    "                             tf.keras.layers.Dense(10)])\n"
                    "model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])\n",
    },
    "mnist": {
        # public: test_images_shape has 2 numbers; hidden: the number of classes, not of labels
        "m1_shapes": "(x_train, y_train), (x_test, y_test) = load_mnist()\n"
                     "train_images_shape = x_train.shape\n"
                     "train_labels_length = len(set(y_train))\n"
                     "test_images_shape = x_test.shape[1:]\n",
        # an adversarial answer: print IPython's input history, hidden checks above included
        "m4_accuracy": 'print("\\n".join(In))\n',
    },
}


@pytest.fixture(scope="module")
def mistakes(tmp_path_factory) -> Course:
    """One submission with known mistakes, 30 hours late, autograded; two problems recorded
    for it as the submission repairs would; feedback generated. Nothing in it trains."""
    course = Course.copy_of(tmp_path_factory.mktemp("mistakes") / "course")
    course.generate(ASSIGNMENT)
    notebooks = builder.release(course.layout)
    for name, answers in MISTAKES.items():
        for gid, code in answers.items():
            builder.set_answer(notebooks[name], gid, code)
    Submission(notebooks, timestamp=builder.late_by(course.layout, hours=30)).submit(course, "mistakes")
    course.nbgrader("autograde", ASSIGNMENT)
    graded = course.layout.autograded("mistakes", ASSIGNMENT)
    problems.record(graded, "duplicate-cell", "fashion_mnist", "f3_scale_hidden",
                    "a copied check cell was ignored; the original was graded")
    problems.record(graded, "stray-file", None, None, "notes.txt is not part of the assignment and was not graded")
    course.nbgrader("generate_feedback", ASSIGNMENT, "--force")
    return course


def mistakes_page(course: Course, notebook: str) -> Path:
    return course.layout.feedback("mistakes", ASSIGNMENT) / f"{notebook}.html"


# --- tests: nothing secret -------------------------------------------------------------


@pytest.mark.slow
def test_every_autograded_notebook_gets_feedback(class_feedback, graded_class):
    assert class_feedback, "no autograded notebooks"
    assert {s for s, _ in class_feedback} >= {s for s in graded_class.students
                                              if graded_class.autograded_dir(s).is_dir()}
    missing = [str(p) for p in class_feedback.values() if not p.is_file()]
    assert not missing, "no feedback page for:\n" + "\n".join(missing)


def test_secret_lines_are_many():
    assert len(SECRETS["hidden test"]) > 100 and len(SECRETS["mark scheme"]) > 30


@pytest.mark.slow
def test_class_feedback_shows_no_hidden_test_code_or_mark_scheme(class_feedback):
    found = {}
    for key, path in class_feedback.items():
        raw = path.read_text(encoding="utf-8")
        assert "BEGIN HIDDEN TESTS" not in raw and "BEGIN MARK SCHEME" not in raw, key
        found.update({(key, kind): lines for kind, lines in leaks(path).items() if lines})
    assert not found, "\n".join(f"{key}: {lines[:5]}" for key, lines in found.items())


@pytest.mark.slow
def test_leak_search_finds_the_leaks_of_stock_nbgrader_feedback(class_feedback, graded_class):
    """The search above can fail: run on stock nbgrader's feedback of the same notebooks (of
    one student, to save time), it finds hidden test code and mark schemes in every page."""
    student = "perfect" if ("perfect", "fashion_mnist") in class_feedback else sorted(s for s, _ in class_feedback)[0]
    graded_class.course.nbgrader(
        "generate_feedback", ASSIGNMENT, "--force", f"--student={student}",
        "--CourseDirectory.feedback_directory=stock-feedback",
        "--GenerateFeedback.preprocessors=nbgrader.preprocessors.GetGrades",
        "--GenerateFeedback.preprocessors=nbconvert.preprocessors.CSSHTMLHeaderPreprocessor")
    stock = sorted(graded_class.course.layout.path("stock-feedback", student, ASSIGNMENT).glob("*.html"))
    assert len(stock) == len([k for k in class_feedback if k[0] == student]) > 0
    for path in stock:
        graded = graded_class.autograded_dir(student) / f"{path.stem}.ipynb"
        assert REGIONS["hidden test"][0] in graded.read_text(), "autograde restores the hidden tests"
        found = leaks(path)
        assert len(found["hidden test"]) >= 20, path
        assert len(found["mark scheme"]) >= 5, path


@pytest.mark.slow
def test_mistakes_feedback_shows_no_hidden_test_code_or_mark_scheme(mistakes):
    for name in NOTEBOOKS:
        assert leaks(mistakes_page(mistakes, name)) == {kind: [] for kind in SECRETS}


@pytest.mark.slow
def test_history_printed_by_an_answer_holds_no_hidden_check(mistakes):
    """m4_accuracy prints IPython's input history. The checks ran in the checker kernel (issue 10),
    so the student's kernel never held a hidden check: its history is the student's own cells."""
    graded = nbformat.read(mistakes.layout.autograded("mistakes", ASSIGNMENT) / "mnist.ipynb", as_version=4)
    printed = collapse("".join(o.get("text", "") for o in builder.cell(graded, "m4_accuracy").outputs))
    assert "train_labels_length = len(set(y_train))" in printed, "the adversarial output did not happen"
    assert not [s for s in SECRETS["hidden test"] if s in printed]


@pytest.mark.slow
def test_output_quoting_hidden_code_is_redacted(mistakes, tmp_path):
    """Where an output does quote hidden checks (a kernel that ran them: stock nbgrader, or the
    course with ``SplitExecute.split = False``), the feedback replaces those lines."""
    course = Course(Path(shutil.copytree(mistakes.root, tmp_path / "course", symlinks=True)))
    path = course.layout.autograded("mistakes", ASSIGNMENT) / "mnist.ipynb"
    graded = nbformat.read(path, as_version=4)
    # An mnist kernel that ran the checks could print mnist's hidden checks (not fashion_mnist's).
    source = nbformat.read(SOURCE / "mnist.ipynb", as_version=4)
    quoted = sorted({collapse(line) for cell in source.cells for line in region_lines(cell.source, *REGIONS["hidden test"])}
                    & SECRETS["hidden test"])
    assert len(quoted) > 20
    builder.cell(graded, "m4_accuracy").outputs = [nbformat.v4.new_output("stream", name="stdout",
                                                                          text="\n".join(quoted) + "\n")]
    nbformat.write(graded, path)
    course.nbgrader("generate_feedback", ASSIGNMENT, "--force")
    page = course.layout.feedback("mistakes", ASSIGNMENT) / "mnist.html"
    assert REDACTED in visible_text(page)
    assert not [line for line in quoted if line in visible_text(page)]


# --- tests: what the student learns ----------------------------------------------------


@pytest.mark.slow
def test_every_check_shows_its_verdict(class_feedback, graded_class):
    """Under each check cell: passed/failed as in the gradebook, hidden or public as in the source."""
    hidden_cells = {grade_id(c) for nb in builder.source().values() for c in nb.cells
                    if REGIONS["hidden test"][0] in c.source}
    with graded_class.course.layout.gradebook() as gb:
        for (student, notebook), path in class_feedback.items():
            shown = boxes(path)
            nb = gb.find_submission_notebook(notebook, ASSIGNMENT, student)
            checks = {g.name: g for g in nb.grades if g.cell_type == "code"}
            assert set(shown) == set(checks), (student, notebook)
            for gid, grade in checks.items():
                attrs, text = shown[gid]
                want = "passed" if grade.score >= grade.max_score else "failed"
                assert attrs["data-status"] == want, (student, gid, text)
                assert attrs["data-kind"] == ("hidden" if gid in hidden_cells else "public"), (student, gid)
                assert f"{grade.score:g} / {grade.max_score:g} points" in text, (student, gid, text)
                if want == "failed":
                    assert "Hint: " in text, (student, gid, text)


@pytest.mark.slow
def test_scores_per_question_match_the_gradebook(class_feedback, graded_class):
    with graded_class.course.layout.gradebook() as gb:
        for (student, notebook), path in class_feedback.items():
            nb = gb.find_submission_notebook(notebook, ASSIGNMENT, student)
            want: dict[str, list[float]] = {}
            for g in nb.grades:
                pending = g.needs_manual_grade and g.manual_score is None
                row = want.setdefault(question_of(g.name), [0.0, 0.0, True])
                row[0] += 0.0 if pending else g.score
                row[1] += g.max_score
                row[2] = row[2] and pending
            rows = {a["data-question"]: t for a, t in page(path, "data-question").elements}
            assert set(rows) == set(want), (student, notebook)
            for q, (score, points, all_pending) in want.items():
                shown = f"{'–' if all_pending else f'{score:g}'} / {points:g}"
                assert shown in rows[q], (student, notebook, q, rows[q])
            total = sum(v[0] for v in want.values()) - (nb.late_submission_penalty or 0)
            assert f"Score so far: {total:g} / {sum(v[1] for v in want.values()):g}" in visible_text(path)


@pytest.mark.slow
def test_hidden_failures_show_the_hint_and_not_the_values(mistakes):
    shown = {name: boxes(mistakes_page(mistakes, name)) for name in NOTEBOOKS}
    expectations = {
        ("fashion_mnist", "f3_scale_hidden"): "pixel values go up to 255: scale them to [0, 1]",
        ("fashion_mnist", "f3_augment_hidden"): "np.roll wraps the right edge around",
        ("fashion_mnist", "f4_functions_hidden"): "subtract the maximum before np.exp",
        ("fashion_mnist", "f5_model_hidden"): "the output layer needs activation='softmax'",
        ("mnist", "m1_shapes_hidden"): "count the labels (len(y_train)), not the classes",
    }
    for (name, gid), hint in expectations.items():
        attrs, text = shown[name][gid]
        assert attrs["data-status"] == "failed" and attrs["data-kind"] == "hidden", (gid, text)
        assert f"Hint: {hint}" in text, (gid, text)
        assert "expected" not in text and "found" not in text, (gid, text)
    # what the hidden checks compared, as CheckFailed put it in the autograded notebook
    text = visible_text(mistakes_page(mistakes, "fashion_mnist")) + visible_text(mistakes_page(mistakes, "mnist"))
    for detail in ["at most 1.0", "expected finite", "[nan nan nan]", "('Dense', 10, 'softmax')",
                   "expected 60000", "shifted image wraps around", "largest pixel value of train_images"]:
        assert detail not in text, detail


@pytest.mark.slow
def test_public_failures_show_expected_and_found(mistakes):
    attrs, text = boxes(mistakes_page(mistakes, "mnist"))["m1_shapes_public"]
    assert attrs["data-status"] == "failed" and attrs["data-kind"] == "public"
    assert "test_images_shape should be a tuple of 3 numbers: expected (count, height, width), found (28, 28)" in text
    attrs, text = boxes(mistakes_page(mistakes, "fashion_mnist"))["f1_load_public"]
    assert "TypeError: object of type 'NoneType' has no len()" in text, text
    # the public part of a hidden check is public too: its message is shown whole
    attrs, text = boxes(mistakes_page(mistakes, "fashion_mnist"))["f7_train_hidden"]
    assert "not defined: history, train_acc, val_acc, test_acc" in text, text


@pytest.mark.slow
def test_errors_without_a_hint_get_a_generic_one(mistakes):
    shown = boxes(mistakes_page(mistakes, "fashion_mnist"))
    attrs, text = shown["f7_train_public"]  # untouched answer: NameError in a public check
    assert "NameError: name 'history' is not defined" in text
    assert "Hint: the check needs a name your notebook does not define" in text
    attrs, text = shown["f1_load_hidden"]  # list(None) on a hidden line: only the error's type
    assert attrs["data-status"] == "failed" and "TypeError" in text and "NoneType" not in text, text
    assert "Hint: your code raised TypeError when the check used it" in text


@pytest.mark.slow
def test_problems_and_late_penalty_shown_at_the_top(mistakes):
    with mistakes.layout.gradebook() as gb:
        penalty = gb.find_submission_notebook("fashion_mnist", ASSIGNMENT, "mistakes").late_submission_penalty
    assert penalty > 0
    recorded = problems.load(mistakes.layout.autograded("mistakes", ASSIGNMENT))
    late_recorded = any(p["kind"] == "late" for p in recorded)  # when the grading pipeline notes lateness
    for name in NOTEBOOKS:
        path = mistakes_page(mistakes, name)
        raw = path.read_text(encoding="utf-8")
        assert raw.index('id="coursekit-problems"') < raw.index("data-grade-id="), "problems come first"
        shown = {a["id"]: t for a, t in page(path, "id").elements}
        top = shown["coursekit-problems"]
        assert "a copied check cell was ignored; the original was graded" in top  # recorded for fashion_mnist
        assert "notes.txt is not part of the assignment and was not graded" in top
        assert "Late submission: " + ("" if late_recorded else "submitted 2 days after the due date") in top
        assert raw.count('class="coursekit-problem"') == len(recorded) + (0 if late_recorded else 1)
    top = {a["id"]: t for a, t in page(mistakes_page(mistakes, "fashion_mnist"), "id").elements}["coursekit-problems"]
    assert f"-{penalty:g} points on this notebook" in top
    assert f"after a late penalty of {penalty:g} points" in visible_text(mistakes_page(mistakes, "fashion_mnist"))


# --- mark schemes: for TAs only ---------------------------------------------------------


@pytest.mark.slow
def test_mark_schemes_reach_tas_but_not_students(class_feedback, graded_class):
    """formgrader shows the autograded notebook to TAs: it holds every mark scheme; the
    release and the feedback hold none of them."""
    for name in NOTEBOOKS:
        schemes = [collapse("\n".join(region_lines(c.source, *REGIONS["mark scheme"])))
                   for c in nbformat.read(SOURCE / f"{name}.ipynb", as_version=4).cells
                   if REGIONS["mark scheme"][0] in c.source]
        assert schemes, f"no mark schemes in source/week2/{name}.ipynb"
        release = collapse("\n".join(c.source for c in nbformat.read(RELEASE / f"{name}.ipynb", as_version=4).cells))
        for student in graded_class.students:
            graded = graded_class.autograded_dir(student) / f"{name}.ipynb"
            if not graded.is_file():
                continue
            ta_view = collapse("\n".join(c.source for c in nbformat.read(graded, as_version=4).cells))
            student_view = visible_text(class_feedback[(student, name)])
            for scheme in schemes:
                assert scheme in ta_view, (student, name, scheme[:60])
                assert scheme[:60] not in student_view and scheme[-60:] not in student_view, (student, name)
                assert scheme[:60] not in release


# --- hints that name the misconception (coursekit.student.checks) --------------------------------


def _failure(fn, *args, **kwargs):
    from coursekit.student.checks import CheckFailed

    with pytest.raises(CheckFailed) as err:
        fn(*args, **kwargs)
    return err.value


@pytest.mark.parametrize("layers, hint", [
    ([("Dense", 128, "relu"), ("Dense", 10, "softmax")], "start with tf.keras.layers.Flatten()"),
    ([("Flatten",), ("Dense", 128, "relu"), ("Dense", 1, "softmax")], "one neuron per class: Dense(10"),
    ([("Flatten",), ("Dense", 128, "relu"), ("Dense", 64, "relu"), ("Dense", 10, "softmax")], "no extra layers"),
    ([("Flatten",), ("Dense", 128, "relu"), ("Dense", 10, "linear")], "activation='softmax'"),
])
def test_architecture_failures_name_the_misconception(layers, hint):
    tf = pytest.importorskip("tensorflow")
    from coursekit.student import checks

    keras_layers = [tf.keras.Input(shape=(28, 28) if layers[0] == ("Flatten",) else (784,))]
    for spec in layers:
        keras_layers.append(tf.keras.layers.Flatten() if spec[0] == "Flatten" else
                            tf.keras.layers.Dense(spec[1], activation=None if spec[2] == "linear" else spec[2]))
    failure = _failure(checks.expect_architecture, tf.keras.Sequential(keras_layers),
                       [("Flatten",), ("Dense", 128, "relu"), ("Dense", 10, "softmax")])
    assert hint in failure.hint


def test_other_helper_failures_carry_a_hint():
    import numpy as np

    from coursekit.student import checks

    assert "int(" in _failure(checks.expect_int, 3.0, "pred_50", 0, 9).hint
    assert "maximum" in _failure(checks.expect_probability_rows, np.array([np.nan, 1.0]), "softmax(x)").hint
    assert _failure(checks.as_array, [[1, 2], [3]], "x").hint


def test_redaction_also_reads_outputs_as_html():
    """An answer cell could display the input history as highlighted HTML (IPython's Code):
    the guard reads text/html outputs without their tags and entities."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    from coursekit.rendering.feedback import redact, secret_lines

    nb = nbformat.read(SOURCE / "fashion_mnist.ipynb", as_version=4)
    secrets = secret_lines(nb)
    hidden = builder.cell(nb, "f4_functions_hidden").source
    shown = highlight(hidden, PythonLexer(), HtmlFormatter())
    assert sum(s in collapse(re.sub(r"<[^>]*>", "", shown).replace("&quot;", '"')) for s in SECRETS["hidden test"]) >= 5
    cleaned, count = redact(shown, secrets)
    parsed = _Page()
    parsed.feed(cleaned)
    assert count >= 5 and not [s for s in SECRETS["hidden test"] if s in collapse("".join(parsed.text))]
