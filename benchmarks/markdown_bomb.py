"""What a markdown bomb in a written answer costs a page: stock nbgrader's formgrader and feedback
exporters against the course's (coursekit.rendering.pages: cut to coursekit.rendering.bounds' limits, then
sanitised), side by side in one run, on the same notebook. Time and peak memory (RSS growth of a
fresh child process per case). results/markdown_bomb.txt holds a recorded run.

    .venv/bin/python benchmarks/markdown_bomb.py [--chars 2500000]
"""

import argparse
import multiprocessing
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

NBGRADER = Path(__import__("nbgrader").__file__).parent
RESOURCES = {"base_url": "/", "submission_id": "s1", "index": 0, "total": 1, "assignment_id": "week2",
             "notebook_id": "fashion_mnist", "student": "s", "first_name": None, "last_name": None,
             "notebook_path": "x", "nbgrader": {"notebook": "fashion_mnist", "score": 0.0, "max_score": 43.0,
                                               "late_penalty": 0.0}}


def notebook(chars: int):
    from builder import release, set_answer
    from hostile_pages import BOMB_UNIT

    nb = release()["fashion_mnist"]
    set_answer(nb, "f6_roles", (BOMB_UNIT * (chars // len(BOMB_UNIT) + 1))[:chars])
    for c in nb.cells:
        meta = c.metadata.get("nbgrader", {})
        if meta.get("grade") or meta.get("task"):
            meta["score"] = 0.0
    return nb


def exporter(case: str):
    from nbconvert.exporters import HTMLExporter

    from coursekit.rendering.pages import FeedbackExporter, FormgradeExporter

    if case == "stock formgrader":
        return HTMLExporter(template_name="formgrade", extra_template_basedirs=[str(NBGRADER / "server_extensions" / "formgrader" / "templates")])
    if case == "stock feedback":
        return HTMLExporter(template_name="feedback", extra_template_basedirs=[str(NBGRADER / "server_extensions" / "formgrader" / "templates")],
                            extra_template_paths=[str(NBGRADER / "server_extensions" / "formgrader" / "static" / "node_modules" / "bootstrap" / "dist" / "css")])
    return FormgradeExporter() if case == "course formgrader" else FeedbackExporter()


def run(case: str, chars: int, out):
    nb = notebook(chars)
    ex = exporter(case)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        html, _ = ex.from_notebook_node(nb, resources=dict(RESOURCES))
        size = len(html)
    except Exception as err:  # stock feedback's template may want files nbgrader ships elsewhere
        size = f"failed: {type(err).__name__}"
    out.put((case, time.perf_counter() - start, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, size))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--chars", type=int, default=2_500_000)
    args = parser.parse_args()
    print(f"written answer of {args.chars:,} characters of nested quotes and emphasis (hostile_pages.BOMB_UNIT)")
    print(f"{'page':<20} {'seconds':>8} {'peak MB':>8}  page size")
    for case in ("stock formgrader", "course formgrader", "stock feedback", "course feedback"):
        out = multiprocessing.Queue()
        p = multiprocessing.Process(target=run, args=(case, args.chars, out))
        p.start()
        case, seconds, mb, size = out.get()
        p.join()
        print(f"{case:<20} {seconds:8.1f} {mb:8.0f}  {size}")


if __name__ == "__main__":
    main()
