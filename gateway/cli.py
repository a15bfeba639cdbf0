"""The `conduct-gateway` command line (SPEC section 9)."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import click

from gateway.cli_common import (
    EXIT_CHECK_FAILED,
    EXIT_USAGE,
    config_option,
    database_unavailable,
    fail,
    load_settings,
    open_database,
    run_action,
)
from gateway.config import ConfigError, Settings
from rules.errors import GatewayError


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
    from sqlalchemy.exc import OperationalError

    from gateway import daemon
    from gateway.secret import SecretError
    from gateway.smtp_limits import SmtpTlsError

    settings = _load_with_files(ctx)
    try:
        daemon.run(settings)
    except OperationalError as error:
        # At start-up (migrations, the secret's fingerprint): systemd starts it again.
        database_unavailable(settings.storage.url, str(error.orig or error))
    except (ConfigError, SecretError, SmtpTlsError) as error:
        # A secret that does not match the database, like a certificate that does not
        # load, is a configuration problem: exit 2 (SPEC section 9), as a missing one.
        fail(str(error), EXIT_USAGE)
    except GatewayError as error:
        fail(str(error), EXIT_CHECK_FAILED)


@main.command("check-config")
@config_option
@click.pass_context
def check_config(ctx: click.Context) -> None:
    """Validate the configuration and print it in effect, secrets masked."""
    from gateway.config_render import render

    click.echo(render(_load_with_files(ctx)), nl=False)


def _load_with_files(ctx: click.Context) -> Settings:
    """The settings, with every file they name checked as `serve` will read it; else exit 2."""
    from gateway import config_files

    settings = load_settings(ctx)
    try:
        config_files.check(settings)
    except ConfigError as error:
        fail(str(error), EXIT_USAGE)
    return settings


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

    with open_database(load_settings(ctx), at_head=False) as database:
        migrate.upgrade(database)
        click.echo(f"database at revision {migrate.current_revision(database)}")


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

    with open_database(load_settings(ctx)) as database, database.transaction() as session:
        report = audit_store.verify_chain(session)
    if report.problem is not None:
        fail(f"audit chain broken: {report.problem}", EXIT_CHECK_FAILED)
    click.echo(f"{report.count} events, latest link {report.latest_link}")


@main.group()
@config_option
def bans() -> None:
    """Posting bans on the served lists (SPEC section 6)."""


@bans.command("list")
@click.option("--all", "show_all", is_flag=True, help="Lifted and expired bans too.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of bans.")
@config_option
@click.pass_context
def bans_list(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """Active bans (--all: lifted and expired too)."""
    from gateway import cli_bans

    run_action(ctx, cli_bans.list_bans, show_all=show_all, as_json=as_json)


@bans.command("add")
@click.argument("pattern")
@click.option("--list", "list_text", metavar="L", help="Only this list (default: all lists).")
@click.option("--for", "duration", metavar="D", help="Lasting this long: 90m, 24h, 7d, 2w.")
@click.option("--until", metavar="DATE", help="Until 00:00 of YYYY-MM-DD ([reminders] timezone).")
@click.option("--reason", metavar="R", help="Why (never told to the sender).")
@click.option("--case", type=int, metavar="N", help="Link the ban to case N.")
@click.option("--force", is_flag=True, help="Add it even if it catches staff or a local domain.")
@config_option
@click.pass_context
def bans_add(
    ctx: click.Context,
    pattern: str,
    list_text: str | None,
    duration: str | None,
    until: str | None,
    reason: str | None,
    case: int | None,
    force: bool,
) -> None:
    """Ban PATTERN: user@example.com, *@example.com, *@*.example.com or re:REGEX.

    Like #ban, a pattern that would catch a staff member, the director, the conduct
    address or a whole local domain is refused without --force.
    """
    from gateway import cli_bans

    run_action(
        ctx,
        cli_bans.add_ban,
        pattern_text=pattern,
        list_text=list_text,
        duration=duration,
        until=until,
        reason=reason,
        case=case,
        force=force,
    )


@bans.command("remove")
@click.argument("ban_id", metavar="ID", type=int)
@config_option
@click.pass_context
def bans_remove(ctx: click.Context, ban_id: int) -> None:
    """Lift ban ID."""
    from gateway import cli_bans

    run_action(ctx, cli_bans.remove_ban, ban_id=ban_id)


@bans.command("import")
@click.argument(
    "path", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--list", "list_text", metavar="L", help="Only this list (default: all lists).")
@click.option("--reason", metavar="R", help="Why, for every ban of the file.")
@config_option
@click.pass_context
def bans_import(ctx: click.Context, path: Path, list_text: str | None, reason: str | None) -> None:
    """Add a ban per line of FILE: section 6 patterns, Sympa blocklist.txt lines or
    Mailman 3 bans (^regex); # comments and blank lines are skipped. One bad line
    refuses the whole file."""
    from gateway import cli_bans

    run_action(ctx, cli_bans.import_bans, path=path, list_text=list_text, reason=reason)


@bans.command("check")
@click.argument("address")
@click.option("--list", "list_text", metavar="L", help="Posting to this list (default: any).")
@click.option("--json", "as_json", is_flag=True, help="As JSON: address, list, banned, ban.")
@config_option
@click.pass_context
def bans_check(ctx: click.Context, address: str, list_text: str | None, as_json: bool) -> None:
    """Would a post from ADDRESS be refused, and by which ban.

    Without --list, every ban in force counts, whatever list it is for.
    """
    from gateway import cli_bans

    run_action(ctx, cli_bans.check_address, address=address, list_text=list_text, as_json=as_json)


@main.group()
@config_option
def held() -> None:
    """List posts held by a ban (ban_action = hold)."""


@held.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of held posts.")
@config_option
@click.pass_context
def held_list(ctx: click.Context, as_json: bool) -> None:
    """Posts waiting for a decision, oldest first."""
    from gateway import cli_bans

    run_action(ctx, cli_bans.list_held, as_json=as_json)


@held.command("release")
@click.argument("held_id", metavar="ID", type=int)
@config_option
@click.pass_context
def held_release(ctx: click.Context, held_id: int) -> None:
    """Send held post ID on to its list."""
    from gateway import cli_bans

    run_action(ctx, cli_bans.release_held, held_id=held_id)


@held.command("discard")
@click.argument("held_id", metavar="ID", type=int)
@config_option
@click.pass_context
def held_discard(ctx: click.Context, held_id: int) -> None:
    """Drop held post ID."""
    from gateway import cli_bans

    run_action(ctx, cli_bans.discard_held, held_id=held_id)


def _register() -> None:
    from gateway.cli_case_commands import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


_register()
