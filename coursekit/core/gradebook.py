"""The course's gradebook as the class runner reads and writes it, on any database nbgrader's
``db_url`` accepts (SQLite, PostgreSQL, ...), through SQLAlchemy and nbgrader's own tables
(``nbgrader.api``'s models), never SQL written for one database.

Workers never open the course's gradebook. Each submission is graded by ``nbgrader autograde`` in
a private course copy whose gradebook is a small SQLite file: the course's structure
(``template``: course, assignments, notebooks, cells; no student data) plus that one student's
rows (``CourseGradebook.rows``, put in with ``add_rows``). After grading, the worker reads the
student's rows back (plain data: ``Rows``) and the runner alone writes them into the course's
gradebook with ``CourseGradebook.merge``: one submission per transaction, the fields
``nbgrader autograde`` sets copied, the TAs' fields (manual scores and comments, extra credit,
flags, extensions, student names) kept, as ``nbgrader autograde --force`` keeps them.

Rows are matched by natural keys (student and assignment; notebook; cell), so merging the same
submission twice leaves the same gradebook. Cells, notebooks and assignments have the same ids
in the private gradebook as in the course's, because the template copies them.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Column, MetaData, String, Table, create_engine, event, insert, select, update
from sqlalchemy.engine import Connection, Engine, make_url

# Tables that describe the course (written by generate_assignment), in foreign-key order.
STRUCTURE = ("course", "assignment", "notebook", "base_cell", "grade_cells", "solution_cells", "task_cells",
             "source_cell")
# One student's submission of one assignment, in foreign-key order.
SUBMISSION = ("student", "submitted_assignment", "submitted_notebook", "grade", "comment")
# Fields `nbgrader autograde` writes, by table; every other field belongs to instructors and TAs.
AUTO_FIELDS = {
    "submitted_assignment": ("timestamp",),
    "submitted_notebook": ("late_submission_penalty",),
    "grade": ("auto_score", "needs_manual_grade"),
    "comment": ("auto_comment",),
}

Rows = dict[str, list[dict[str, Any]]]  # table -> rows; plain data, picklable (sent between machines)


# nbgrader's schema version, which nbgrader writes beside its tables (not one of its models).
ALEMBIC_VERSION = Table("alembic_version", MetaData(), Column("version_num", String(32), nullable=False))


def tables():
    from nbgrader.api import Base

    return Base.metadata.tables


def connect(db_url: str) -> Engine:
    """An engine for ``db_url``. On SQLite every transaction starts with ``BEGIN IMMEDIATE``: it
    takes the write lock first (waiting up to 120 s), so that a merge never fails half-way on a
    lock that formgrader or a TA's nbgrader command holds."""
    if make_url(db_url).get_backend_name() != "sqlite":
        return create_engine(db_url, pool_pre_ping=True)
    engine = create_engine(db_url, connect_args={"timeout": 120})

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # SQLAlchemy's documented recipe for pysqlite

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _first(conn: Connection, statement) -> dict | None:
    row = conn.execute(statement).mappings().first()
    return dict(row) if row is not None else None


def _all(conn: Connection, statement) -> list[dict]:
    return [dict(r) for r in conn.execute(statement).mappings()]


class CourseGradebook:
    """The course's gradebook at ``db_url``; only the runner process writes it."""

    def __init__(self, db_url: str):
        self.db_url = db_url
        self.engine = connect(db_url)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "CourseGradebook":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def knows_assignment(self, assignment: str) -> bool:
        """Whether ``nbgrader generate_assignment`` has added ``assignment``."""
        t = tables()["assignment"]
        with contextlib.suppress(Exception), self.engine.connect() as conn:
            return conn.execute(select(t.c.id).where(t.c.name == assignment)).first() is not None
        return False

    def structure(self) -> Rows:
        """The course's assignments, notebooks and cells: no student data."""
        with self.engine.connect() as conn:
            found = {name: _all(conn, select(tables()[name])) for name in STRUCTURE}
            found[ALEMBIC_VERSION.name] = _all(conn, select(ALEMBIC_VERSION))
            return found

    def rows(self, student: str, assignment: str) -> Rows:
        """Everything the gradebook holds about one student's submission of one assignment."""
        with self.engine.connect() as conn:
            return _submission_rows(conn, student, assignment)

    def merge(self, rows: Rows, student: str, assignment: str) -> None:
        """Write one graded submission (the worker's ``rows``) in one transaction."""
        with self.engine.begin() as conn:
            _merge(conn, rows, student, assignment)


def _submission_rows(conn: Connection, student: str, assignment: str) -> Rows:
    t = tables()
    sa, sn = t["submitted_assignment"], t["submitted_notebook"]
    found: Rows = {name: [] for name in SUBMISSION}
    found["student"] = _all(conn, select(t["student"]).where(t["student"].c.id == student))
    assignment_ids = select(t["assignment"].c.id).where(t["assignment"].c.name == assignment).scalar_subquery()
    found["submitted_assignment"] = _all(conn, select(sa).where(sa.c.student_id == student,
                                                              sa.c.assignment_id == assignment_ids))
    sub_ids = [r["id"] for r in found["submitted_assignment"]]
    if sub_ids:
        found["submitted_notebook"] = _all(conn, select(sn).where(sn.c.assignment_id.in_(sub_ids)))
    nb_ids = [r["id"] for r in found["submitted_notebook"]]
    for name in ("grade", "comment"):
        if nb_ids:
            found[name] = _all(conn, select(t[name]).where(t[name].c.notebook_id.in_(nb_ids)))
    return found


def _merge(conn: Connection, rows: Rows, student: str, assignment: str) -> None:
    t = tables()
    sa, sn = t["submitted_assignment"], t["submitted_notebook"]

    def copy_row(name: str, row: dict) -> None:
        conn.execute(insert(t[name]).values(**row))

    def update_auto(name: str, target_id: str, row: dict, extra: dict | None = None) -> None:
        values = {f: row[f] for f in AUTO_FIELDS[name]} | (extra or {})
        conn.execute(update(t[name]).where(t[name].c.id == target_id).values(**values))

    assignment_id = conn.execute(select(t["assignment"].c.id).where(t["assignment"].c.name == assignment)).scalar_one()
    if _first(conn, select(t["student"].c.id).where(t["student"].c.id == student)) is None:
        for row in rows["student"]:
            copy_row("student", row)
    (w_sub,) = [r for r in rows["submitted_assignment"] if r["student_id"] == student]
    # FOR UPDATE (PostgreSQL; SQLite has the whole database locked already): a TA saving a mark
    # in formgrader waits until this submission is merged, so the review flag below is right.
    m_sub = _first(conn, select(sa).where(sa.c.assignment_id == assignment_id, sa.c.student_id == student)
                   .with_for_update())
    if m_sub is not None:
        sub_id = m_sub["id"]
        update_auto("submitted_assignment", sub_id, w_sub)
    else:
        sub_id = w_sub["id"]
        copy_row("submitted_assignment", w_sub)
    for w_nb in [r for r in rows["submitted_notebook"] if r["assignment_id"] == w_sub["id"]]:
        m_nb = _first(conn, select(sn).where(sn.c.assignment_id == sub_id, sn.c.notebook_id == w_nb["notebook_id"])
                      .with_for_update())
        if m_nb is not None:
            nb_id = m_nb["id"]
            update_auto("submitted_notebook", nb_id, w_nb)
        else:
            nb_id = w_nb["id"]
            copy_row("submitted_notebook", dict(w_nb, assignment_id=sub_id))
        for name in ("grade", "comment"):
            table = t[name]
            existing = {r["cell_id"]: r for r in _all(conn, select(table).where(table.c.notebook_id == nb_id)
                                                      .with_for_update())}
            for w_row in [r for r in rows[name] if r["notebook_id"] == w_nb["id"]]:
                m_row = existing.get(w_row["cell_id"])
                if m_row is None:
                    copy_row(name, dict(w_row, notebook_id=nb_id))
                elif name == "grade":
                    # nbgrader flags a grade for review when a TA has scored it; a TA may have
                    # done so in the course's gradebook while this submission was graded.
                    review = bool(w_row["needs_manual_grade"]) or (
                        m_row["manual_score"] is not None and w_row["manual_score"] is None)
                    update_auto(name, m_row["id"], w_row, {"needs_manual_grade": review})
                else:
                    update_auto(name, m_row["id"], w_row)


# --- the private gradebook of one submission (a SQLite file) ---------------------------------------


def template(structure: Rows, target: Path) -> bytes:
    """A SQLite gradebook at ``target`` with nbgrader's schema, its version and the course's
    ``structure``, as nbgrader itself creates one; returns its bytes (what a worker gets)."""
    target.unlink(missing_ok=True)
    # Private (0600) from the start: SQLite keeps the mode of the file it is given.
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    engine = connect(f"sqlite:///{target}")
    try:
        tables()  # nbgrader's models, imported
        from nbgrader.api import Base

        Base.metadata.create_all(engine)
        ALEMBIC_VERSION.create(engine)
        with engine.begin() as conn:
            for table in [*(tables()[name] for name in STRUCTURE), ALEMBIC_VERSION]:
                if structure.get(table.name):
                    conn.execute(insert(table), structure[table.name])
    finally:
        engine.dispose()
    with contextlib.closing(sqlite3.connect(target)) as db:
        db.execute("VACUUM")
    return target.read_bytes()


def add_rows(path: Path, rows: Rows) -> None:
    """Put one student's rows into the private gradebook at ``path``."""
    engine = connect(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            for name in SUBMISSION:
                if rows[name]:
                    conn.execute(insert(tables()[name]), rows[name])
    finally:
        engine.dispose()


def read_rows(path: Path, student: str, assignment: str) -> Rows:
    """One student's rows from the private gradebook at ``path``, after grading."""
    with CourseGradebook(f"sqlite:///{path}") as db:
        return db.rows(student, assignment)


# Tables nbgrader's gradebook always has (nbgrader 0.9.6's schema).
REQUIRED_TABLES = ("assignment", "notebook", "base_cell", "grade_cells", "student", "submitted_assignment",
                   "submitted_notebook", "grade", "comment")


def damage(db_url: str) -> str | None:
    """Why the gradebook at ``db_url`` cannot be used (None when it can, or does not exist yet:
    nbgrader makes a new one). Read-only: nothing is written, so that a command can stop before
    it changes anything (``nbgrader autograde --force`` deletes autograded folders first)."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:" or not Path(url.database).exists():
            return None
        return _sqlite_damage(Path(url.database))
    from sqlalchemy import inspect
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


def planted(db_url: str) -> str | None:
    """Why root must not open the SQLite gradebook at ``db_url`` (None: it may). The gradebook's
    folder is the staff's to write (bin/hub): SQLite follows a link at the database's own name,
    so a link planted there would make root create or write a database file anywhere. (SQLite
    opens its journal and WAL files without following links; an unused link there is harmless.)"""
    url = make_url(db_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    path = Path(url.database)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        return f"The gradebook {path} cannot be checked ({err.strerror}). Nothing was graded or changed."
    import stat

    if stat.S_ISLNK(st.st_mode):
        why = f"a symbolic link (to '{os.readlink(path)}')"
    elif not stat.S_ISREG(st.st_mode):
        why = "not a plain file"
    elif st.st_nlink != 1:
        why = "a hard link (the same file is elsewhere on the disk)"
    else:
        return None
    return (f"The gradebook {path} is {why}. Grading runs as root and does not open a gradebook through a link "
            "someone could plant in the gradebook's folder; put the real gradebook file there. Nothing was "
            "graded or changed.")


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
