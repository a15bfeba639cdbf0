"""Many rows in one DB-API `executemany`: the inbox's batches (IMAP, SMTP group commits).

SQLAlchemy processes every bound value of every row in Python (type decorators, the
datetime format SQLite stores): for a batch of 500 messages that cost more than the
insert. Here a value that is the same in every row (`now`, the source, the state) is
processed once, and the others still go through their column type's own processing, so
what is stored is what an ORM or Core insert would store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

Processor = Callable[[Any], Any]


def _processor(table: Table, name: str, dialect: Dialect) -> Processor | None:
    # The same callable SQLAlchemy's compiled statements use for this column's type.
    processor: Processor | None = table.c[name].type._cached_bind_processor(dialect)
    return processor


def _bound(process: Processor | None, value: Any) -> Any:
    return value if process is None else process(value)


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
    if not rows:
        return 0
    connection = session.connection()
    dialect = connection.dialect
    processors = [_processor(table, name, dialect) for name in varying]
    fixed = tuple(
        _bound(_processor(table, name, dialect), value) for name, value in constant.items()
    )
    quote = dialect.identifier_preparer.quote
    names = [*varying, *constant]
    marker = "?" if dialect.paramstyle == "qmark" else "%s"
    # Names and clause come from this code, never from mail; the values are bound.
    columns = ", ".join(quote(name) for name in names)
    markers = ", ".join([marker] * len(names))
    statement = f"INSERT INTO {quote(table.name)} ({columns}) VALUES ({markers}) {on_conflict}"  # noqa: S608
    parameters = [
        tuple(_bound(process, value) for process, value in zip(processors, row, strict=True))
        + fixed
        for row in rows
    ]
    return int(connection.exec_driver_sql(statement, parameters).rowcount)
