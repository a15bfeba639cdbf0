"""Many rows in one statement: the inbox's batches (IMAP, SMTP group commits).

SQLAlchemy processes every bound value of every row in Python (type decorators, the
datetime format SQLite stores): for a batch of 500 messages that costs more than the
insert. Here a value that is the same in every row (`now`, the source, the state) is
processed once, and the others still go through their column type's own processing, so
what is stored is what an ORM or Core insert would store.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Table, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, CursorResult, Dialect
from sqlalchemy.orm import InstrumentedAttribute, Session

Processor = Callable[[Any], Any]
# SQLite's limit on a statement's parameters is 32,766 since 3.32 (999 before it; Python
# 3.11 on Debian 12 links 3.40): a multi-row VALUES stays well within it.
SQLITE_PARAMETERS = 30_000


def _processor(table: Table, name: str, dialect: Dialect) -> Processor | None:
    # The same callable SQLAlchemy's compiled statements use for this column's type.
    processor: Processor | None = table.c[name].type._cached_bind_processor(dialect)
    return processor


def _bound(process: Processor | None, value: Any) -> Any:
    return value if process is None else process(value)


def _processed(
    table: Table,
    dialect: Dialect,
    varying: Sequence[str],
    rows: Sequence[Sequence[Any]],
    constant: Mapping[str, Any],
) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    """Each row's values through their column's processing, and the constants once."""
    processors = [_processor(table, name, dialect) for name in varying]
    values = [
        tuple(_bound(process, value) for process, value in zip(processors, row, strict=True))
        for row in rows
    ]
    fixed = {
        name: _bound(_processor(table, name, dialect), value) for name, value in constant.items()
    }
    return values, fixed


def insert_many(
    session: Session,
    table: Table,
    varying: Sequence[str],
    rows: Sequence[Sequence[Any]],
    constant: Mapping[str, Any],
    *,
    on_conflict: str,
) -> int:
    """Insert `rows` (values for the `varying` columns, in order), each with `constant`;
    `on_conflict` is the statement's ON CONFLICT clause (same syntax on both backends).
    Returns how many rows were inserted (a conflict skipped is not counted)."""
    return _insert(session, table, varying, rows, constant, on_conflict, ())[0]


def insert_returning(
    session: Session,
    table: Table,
    varying: Sequence[str],
    rows: Sequence[Sequence[Any]],
    constant: Mapping[str, Any],
    *,
    on_conflict: str,
    returning: Sequence[str],
) -> list[tuple[Any, ...]]:
    """`insert_many` that returns the `returning` columns of exactly the rows it inserted
    (a conflict skipped returns nothing), in no particular order."""
    return _insert(session, table, varying, rows, constant, on_conflict, returning)[1]


def _insert(
    session: Session,
    table: Table,
    varying: Sequence[str],
    rows: Sequence[Sequence[Any]],
    constant: Mapping[str, Any],
    on_conflict: str,
    returning: Sequence[str],
) -> tuple[int, list[tuple[Any, ...]]]:
    """(rows inserted, their `returning` columns). PostgreSQL: one statement from arrays;
    SQLite: multi-row VALUES, as many rows a statement as its parameter limit allows."""
    if not rows:
        return 0, []
    connection = session.connection()
    dialect = connection.dialect
    values, fixed = _processed(table, dialect, varying, rows, constant)
    if dialect.name == "postgresql":
        result = _insert_unnested(connection, table, varying, values, fixed, on_conflict, returning)
        return _counted(result, returning)
    # Names and clauses come from this code, never from mail; every value is bound.
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(name) for name in [*varying, *fixed])
    marker = "?" if dialect.paramstyle == "qmark" else "%s"
    one_row = "(" + ", ".join([marker] * (len(varying) + len(fixed))) + ")"
    tail = on_conflict + _returning_clause(quote, returning)
    same = tuple(fixed.values())
    per_statement = max(1, SQLITE_PARAMETERS // (len(varying) + len(fixed)))
    inserted = 0
    returned: list[tuple[Any, ...]] = []
    for start in range(0, len(values), per_statement):
        part = values[start : start + per_statement]
        rows_sql = ", ".join([one_row] * len(part))
        statement = f"INSERT INTO {quote(table.name)} ({names}) VALUES {rows_sql} {tail}"  # noqa: S608
        flat = tuple(value for row in part for value in row + same)
        count, found = _counted(connection.exec_driver_sql(statement, flat), returning)
        inserted, returned = inserted + count, returned + found
    return inserted, returned


def _returning_clause(quote: Callable[[str], str], returning: Sequence[str]) -> str:
    return " RETURNING " + ", ".join(quote(name) for name in returning) if returning else ""


def _counted(
    result: CursorResult[Any], returning: Sequence[str]
) -> tuple[int, list[tuple[Any, ...]]]:
    if not returning:
        return int(result.rowcount), []
    found = [tuple(row) for row in result.all()]
    return len(found), found


def _insert_unnested(
    connection: Connection,
    table: Table,
    varying: Sequence[str],
    values: list[tuple[Any, ...]],
    fixed: dict[str, Any],
    on_conflict: str,
    returning: Sequence[str],
) -> CursorResult[Any]:
    """PostgreSQL: one statement with one array per column (`unnest`), where psycopg's
    executemany would send the statement once per row. Arrays are cast to the column type
    without its length, so that an over-long value fails as in a plain INSERT instead of
    being cut. A column that is NULL in every row is bound as one NULL: psycopg cannot tell
    the type of a list of nothing but None."""
    dialect = connection.dialect
    quote = dialect.identifier_preparer.quote
    arrays: dict[str, list[Any]] = {}
    single = dict(fixed)
    for name, column in zip(varying, zip(*values, strict=True), strict=True):
        if any(value is not None for value in column):
            arrays[name] = list(column)
        else:
            single[name] = None
    names = ", ".join(quote(name) for name in [*arrays, *single])
    # %b: arrays go in binary; as text, each message's bytes would be escaped into a literal.
    unnest = ", ".join(f"%b::{_unsized(table, name, dialect)}[]" for name in arrays)
    each = "".join(f", %s::{_unsized(table, name, dialect)}" for name in single)
    source = f"SELECT u.*{each} FROM unnest({unnest}) AS u WHERE true"  # noqa: S608
    statement = f"INSERT INTO {quote(table.name)} ({names}) {source} {on_conflict}"
    statement += _returning_clause(quote, returning)
    arguments = (*single.values(), *arrays.values())  # in the order of their placeholders
    return connection.exec_driver_sql(statement, arguments)


def _unsized(table: Table, name: str, dialect: Dialect) -> str:
    """The column's SQL type without a length: VARCHAR(320) -> VARCHAR."""
    return re.sub(r"\(\d+\)", "", table.c[name].type.compile(dialect=dialect))


def one_of(
    session: Session, column: InstrumentedAttribute[Any], values: Sequence[Any]
) -> ColumnElement[bool]:
    """`column IN (values)`; on PostgreSQL `column = ANY(array)`, one parameter where IN
    has one per value, which psycopg converts in Python each time (it caches statements
    of at most 50 parameters): 500 UIDs or keys cost milliseconds that way."""
    if session.get_bind().dialect.name != "postgresql":
        return column.in_(values)
    array = bindparam(None, list(values), type_=ARRAY(column.type))
    return column == any_(array)
