"""Shared pieces of the command line: the -c option, settings, exits, running an action."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from gateway import config
from gateway.config import ConfigError, Settings

F = TypeVar("F", bound=Callable[..., Any])
EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_TEMPFAIL = 0, 1, 2, 75


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
    """Run one `bans`/`held` action on the configured database; Refused exits 1."""
    from gateway.cli_bans import Refused
    from storage import migrate
    from storage.db import Database

    settings = load_settings(ctx)
    database = Database(settings.storage.url)
    try:
        if migrate.current_revision(database) != migrate.head_revision():
            fail(
                "the database is not at the current schema; run `conduct-gateway db upgrade`",
                EXIT_USAGE,
            )
        action(settings, database, **options)
    except Refused as error:
        fail(str(error), EXIT_CHECK_FAILED)
    finally:
        database.dispose()
