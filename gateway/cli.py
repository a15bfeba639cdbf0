"""The `conduct-gateway` command line (SPEC section 9)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from importlib.metadata import version
from typing import Any, NoReturn, TypeVar

import click

from gateway import config
from gateway.config import ConfigError, Settings
from rules.errors import GatewayError

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


def load_settings(ctx: click.Context) -> Settings:
    """The validated settings, or exit 2 naming file, section and key."""
    path = config.resolve_path(ctx.meta.get("config_option"), os.environ)
    try:
        return config.load(path)
    except ConfigError as error:
        fail(str(error), EXIT_USAGE)


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"conduct-gateway: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version("conduct-gateway"), prog_name="conduct-gateway")
@config_option
def main() -> None:
    """A mail gateway for a community's code-of-conduct team.

    It receives the conduct address (by SMTP, IMAP or `ingest`), threads every report
    and reply into a case, lets staff work by email, and stands in front of the
    community's mailing lists to enforce posting bans.
    """


@main.command()
@config_option
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Run everything configured until SIGTERM or SIGINT (then drain and exit 0)."""
    from gateway import daemon

    settings = load_settings(ctx)
    try:
        daemon.run(settings)
    except GatewayError as error:
        fail(str(error), EXIT_USAGE if isinstance(error, ConfigError) else EXIT_CHECK_FAILED)


@main.command("check-config")
@config_option
@click.pass_context
def check_config(ctx: click.Context) -> None:
    """Validate the configuration and print it in effect, secrets masked."""
    from gateway.config_render import render

    click.echo(render(load_settings(ctx)), nl=False)


@main.group()
@config_option
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@config_option
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply migrations (serve does this too; safe when several instances start at once)."""
    from storage import migrate
    from storage.db import Database

    settings = load_settings(ctx)
    database = Database(settings.storage.url)
    try:
        migrate.upgrade(database)
        click.echo(f"database at revision {migrate.current_revision(database)}")
    finally:
        database.dispose()


@main.group()
@config_option
def audit() -> None:
    """The tamper-evident audit chain."""


@audit.command("verify")
@config_option
@click.pass_context
def audit_verify(ctx: click.Context) -> None:
    """Check every link; exit 1 naming the first event edited, inserted or deleted."""
    from storage import audit as audit_store
    from storage.db import Database

    database = Database(load_settings(ctx).storage.url)
    try:
        with database.transaction() as session:
            report = audit_store.verify_chain(session)
    finally:
        database.dispose()
    if report.problem is not None:
        fail(f"audit chain broken: {report.problem}", EXIT_CHECK_FAILED)
    click.echo(f"{report.count} events, latest link {report.latest_link}")
