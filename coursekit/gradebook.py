"""The course's SQLite gradebook, as the class runner writes it: workers grade in private
snapshots, and one process merges each graded submission back.

Concurrent nbgrader processes on one SQLite gradebook fail with "database is locked", so each
worker of ``coursekit.runner`` grades against its own copy (``snapshot``), and the runner alone
writes the course's gradebook with ``merge_submission``: one submission per transaction, the
fields ``nbgrader autograde`` sets copied, the TAs' fields (manual scores and comments, extra
credit, flags, extensions) kept, as ``nbgrader autograde --force`` keeps them.

This works on nbgrader 0.9.6's SQLite schema directly (``ATTACH``, one ``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

# Fields `nbgrader autograde` writes, by table; every other field belongs to instructors and TAs.
AUTO_FIELDS = {
    "submitted_assignment": ("timestamp",),
    "submitted_notebook": ("late_submission_penalty",),
    "grade": ("auto_score", "needs_manual_grade"),
    "comment": ("auto_comment",),
}


def _columns(db: sqlite3.Connection, schema: str, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA {schema}.table_info({table})")]


def merge_submission(master: Path, worker: Path, student: str, assignment: str) -> None:
    """Copy one graded submission from a worker's gradebook into the course's, in one transaction.

    Rows are matched by their natural keys (student and assignment; notebook; cell), so the
    merge is idempotent: merging the same submission twice leaves the same gradebook.
    """
    db = sqlite3.connect(master, timeout=120, isolation_level=None)
    try:
        db.execute("ATTACH DATABASE ? AS w", (str(worker),))
        db.execute("BEGIN IMMEDIATE")
        cols = {t: _columns(db, "main", t) for t in ("student", *AUTO_FIELDS)}

        def copy_row(table: str, row: dict) -> None:
            names = [c for c in cols[table] if c in row]
            db.execute(f"INSERT INTO main.{table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                       [row[c] for c in names])

        def rows(sql: str, *args) -> list[dict]:
            cur = db.execute(sql, args)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]

        def update(table: str, target_id: str, row: dict, extra: dict | None = None) -> None:
            values = {f: row[f] for f in AUTO_FIELDS[table]} | (extra or {})
            db.execute(f"UPDATE main.{table} SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?",
                       [*values.values(), target_id])

        (assignment_id,) = db.execute("SELECT id FROM main.assignment WHERE name = ?", (assignment,)).fetchone()
        if not db.execute("SELECT 1 FROM main.student WHERE id = ?", (student,)).fetchone():
            for row in rows("SELECT * FROM w.student WHERE id = ?", student):
                copy_row("student", row)
        (w_sub,) = rows("SELECT * FROM w.submitted_assignment WHERE assignment_id = ? AND student_id = ?",
                        assignment_id, student)
        m_sub = rows("SELECT * FROM main.submitted_assignment WHERE assignment_id = ? AND student_id = ?",
                     assignment_id, student)
        if m_sub:
            sub_id = m_sub[0]["id"]
            update("submitted_assignment", sub_id, w_sub)
        else:
            sub_id = w_sub["id"]
            copy_row("submitted_assignment", w_sub)
        for w_nb in rows("SELECT * FROM w.submitted_notebook WHERE assignment_id = ?", w_sub["id"]):
            m_nb = rows("SELECT * FROM main.submitted_notebook WHERE assignment_id = ? AND notebook_id = ?",
                        sub_id, w_nb["notebook_id"])
            if m_nb:
                nb_id = m_nb[0]["id"]
                update("submitted_notebook", nb_id, w_nb)
            else:
                nb_id = w_nb["id"]
                copy_row("submitted_notebook", dict(w_nb, assignment_id=sub_id))
            for table in ("grade", "comment"):
                for w_row in rows(f"SELECT * FROM w.{table} WHERE notebook_id = ?", w_nb["id"]):
                    m_row = rows(f"SELECT * FROM main.{table} WHERE notebook_id = ? AND cell_id = ?",
                                 nb_id, w_row["cell_id"])
                    if not m_row:
                        copy_row(table, dict(w_row, notebook_id=nb_id))
                    elif table == "grade":
                        # nbgrader flags a grade for review when a TA has scored it; a TA may have
                        # done so in the course's gradebook while this submission was graded.
                        review = bool(w_row["needs_manual_grade"]) or (
                            m_row[0]["manual_score"] is not None and w_row["manual_score"] is None)
                        update(table, m_row[0]["id"], w_row, {"needs_manual_grade": review})
                    else:
                        update(table, m_row[0]["id"], w_row)
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    finally:
        db.close()


def snapshot(master: Path, target: Path) -> None:
    """A consistent copy of a SQLite file, even while it is in use."""
    src, dst = sqlite3.connect(master, timeout=120), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def knows_assignment(path: Path, assignment: str) -> bool:
    """Whether the gradebook at ``path`` has ``assignment`` (``nbgrader generate_assignment`` adds it)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT 1 FROM assignment WHERE name = ?", (assignment,)).fetchone() is not None


# Tables nbgrader's gradebook always has (nbgrader 0.9.6's schema).
REQUIRED_TABLES = ("assignment", "notebook", "base_cell", "grade_cells", "student", "submitted_assignment",
                   "submitted_notebook", "grade", "comment")


def damage(db_url: str) -> str | None:
    """Why the gradebook at ``db_url`` cannot be used (None when it can, or does not exist yet:
    nbgrader makes a new one). Read-only: nothing is written, so that a command can stop before
    it changes anything (``nbgrader autograde --force`` deletes autograded folders first)."""
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:" or not Path(url.database).exists():
            return None
        return _sqlite_damage(Path(url.database))
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.exc import SQLAlchemyError

    try:
        engine = create_engine(url)
        try:
            tables = set(inspect(engine).get_table_names())
        finally:
            engine.dispose()
    except SQLAlchemyError as err:
        return _damaged(url.render_as_string(hide_password=True), str(err).splitlines()[0])
    missing = [t for t in REQUIRED_TABLES if t not in tables]
    if tables and missing:
        return _damaged(url.render_as_string(hide_password=True), f"tables missing: {', '.join(missing)}")
    return None


def _sqlite_damage(path: Path) -> str | None:
    if not path.is_file():
        return _damaged(str(path), "it is not a file")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)) as db:
            check = [row[0] for row in db.execute("PRAGMA quick_check")]
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as err:
        return _damaged(str(path), f"SQLite: {err}")
    if check != ["ok"]:
        return _damaged(str(path), f"SQLite's check found damage: {'; '.join(check[:3])}")
    missing = [t for t in REQUIRED_TABLES if t not in tables]
    if tables and missing:
        return _damaged(str(path), f"it is not an nbgrader gradebook (tables missing: {', '.join(missing)})")
    return None


def _damaged(where: str, why: str) -> str:
    return (f"The gradebook {where} is damaged ({why}). Nothing was graded, changed or deleted. Restore the "
            "gradebook from a backup (or move it away and run `nbgrader generate_assignment` and "
            "`nbgrader autograde` again), then run the same command again.")
