"""Shared pieces of the command line: the -c option, settings, exits, running an action."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from sqlalchemy.engine import make_url

from gateway import config
from gateway.config import ConfigError, Settings
from gateway.config_values import mask_password

if TYPE_CHECKING:
    from storage.db import Database

F = TypeVar("F", bound=Callable[..., Any])
EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_TEMPFAIL = 0, 1, 2, 75
NOT_AT_HEAD = "the database is not at the current schema; run `conduct-gateway db upgrade`"


def _remember_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.meta["config_option"] = value


def config_option(function: F) -> F:
    """`-c FILE` may stand before the subcommand or after any of its words (SPEC section 9)."""
    return click.option(
        "-c",
        "--config",
        metavar="FILE",
        expose_value=False,
        is_eager=True,
        callback=_remember_config,
        help="Configuration file (default: $CONDUCT_GATEWAY_CONFIG, else "
        "/etc/conduct-gateway/gateway.ini).",
    )(function)


def load_settings(ctx: click.Context, exit_code: int = EXIT_USAGE) -> Settings:
    """The validated settings, or exit (2 unless told) naming file, section and key."""
    path = config.resolve_path(ctx.meta.get("config_option"), os.environ)
    try:
        return config.load(path)
    except ConfigError as error:
        fail(str(error), exit_code)


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"conduct-gateway: {message}", err=True)
    sys.exit(code)


def run_action(ctx: click.Context, action: Callable[..., None], **options: Any) -> None:
    """Run one action on the configured database: Refused exits 1, a configuration error 2."""
    from gateway.cli_bans import Refused
    from gateway.secret import SecretError

    settings = load_settings(ctx)
    try:
        with open_database(settings) as database:
            action(settings, database, **options)
    except Refused as error:
        fail(str(error), EXIT_CHECK_FAILED)
    except (ConfigError, SecretError) as error:
        # The secret `import` signs with, as `serve` reads it: a configuration problem.
        fail(str(error), EXIT_USAGE)


@contextmanager
def open_database(settings: Settings, *, at_head: bool = True) -> Iterator[Database]:
    """The configured database, disposed of afterwards; exits when it cannot be used.

    With `at_head`, a schema other than the current one exits 2 naming `db upgrade`,
    and an SQLite file that does not exist is not created just to find that out. A
    database that cannot be reached or used exits 75 (EX_TEMPFAIL), as `ingest` does:
    the command was right and may be run again once the database is back.
    """
    from sqlalchemy.exc import OperationalError

    from storage import migrate
    from storage.db import Database

    url = settings.storage.url
    if at_head and _sqlite_file_missing(url):
        fail(NOT_AT_HEAD, EXIT_USAGE)
    try:
        database = Database(url)  # makes an SQLite file's directory
    except OSError as error:
        database_unavailable(url, error.strerror or str(error))
    try:
        if at_head and migrate.current_revision(database) != migrate.head_revision():
            fail(NOT_AT_HEAD, EXIT_USAGE)
        yield database
    except OperationalError as error:
        database_unavailable(url, str(error.orig or error))
    finally:
        database.dispose()


def database_unavailable(url: str, reason: str) -> NoReturn:
    """Exit 75 on one line naming the database, passwords masked (SPEC section 10)."""
    lines = reason.strip().splitlines() or ["no reason given"]
    fail(f"cannot use the database {mask_password(url)}: {mask_password(lines[0])}", EXIT_TEMPFAIL)


def _sqlite_file_missing(url: str) -> bool:
    parsed = make_url(url)
    return parsed.drivername.startswith("sqlite") and not Path(parsed.database or "").is_file()
