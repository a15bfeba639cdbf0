"""Options and help of `ingest`, `import` and `cases …`; the work is in cli_cases."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gateway.cli_common import EXIT_TEMPFAIL, config_option, fail, load_settings, run_action


@click.command()
@click.option("--sender", metavar="S", help="Envelope sender (default: the Return-Path).")
@click.option(
    "--recipient",
    "recipients",
    metavar="R",
    multiple=True,
    help="Envelope recipient; repeat for several (default: X-Original-To, "
    "Delivered-To, else To/Cc at the conduct domain).",
)
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@config_option
@click.pass_context
def ingest(
    ctx: click.Context, sender: str | None, recipients: tuple[str, ...], file: Path | None
) -> None:
    """Store one raw message from FILE or stdin (for Postfix pipe, procmail).

    Exits 0 once the message is committed, 75 on any failure to store it, so the
    delivering MTA keeps it and retries: a broken configuration included, since
    exit 2 would make Postfix bounce the report.
    """
    from gateway import cli_cases
    from storage.db import Database

    try:
        data = file.read_bytes() if file is not None else sys.stdin.buffer.read()
        settings = load_settings(ctx, exit_code=EXIT_TEMPFAIL)
        database = Database(settings.storage.url)
        try:
            entry = cli_cases.ingest(
                settings, database, data=data, sender=sender, recipients=recipients
            )
        finally:
            database.dispose()
    except SystemExit:
        raise
    except Exception as error:
        fail(f"could not store the message ({type(error).__name__}: {error})", EXIT_TEMPFAIL)
    click.echo(f"stored as {entry}")


@click.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@config_option
@click.pass_context
def import_mail(ctx: click.Context, path: Path) -> None:
    """Import an mbox or Maildir of past correspondence into cases.

    Idempotent (a second run adds nothing); sends no mail and schedules nothing.
    Imported cases keep their dates, are marked imported and have status waiting.
    """
    from gateway import cli_cases

    run_action(ctx, cli_cases.import_path, path=path)


@click.group()
@config_option
def cases() -> None:
    """Cases: list, show, export."""


@cases.command("list")
@click.option(
    "--status",
    type=click.Choice(["new", "investigating", "waiting", "resolved", "closed"]),
    help="Only this status.",
)
@click.option("--json", "as_json", is_flag=True, help="A JSON array of cases.")
@config_option
@click.pass_context
def cases_list(ctx: click.Context, status: str | None, as_json: bool) -> None:
    """Cases, newest first."""
    from gateway import cli_cases

    run_action(ctx, cli_cases.list_cases, status=status, as_json=as_json)


@cases.command("show")
@click.argument("number", metavar="N", type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="The case as JSON.")
@config_option
@click.pass_context
def cases_show(ctx: click.Context, number: int, as_json: bool) -> None:
    """One case: participants, messages, events, bans, sanctions."""
    from gateway import cli_cases

    run_action(ctx, cli_cases.show_case, number=number, as_json=as_json)


@cases.command("export")
@click.argument("number", metavar="N", type=click.IntRange(min=1))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="The mbox to write (default case-N.mbox); FILE.json is written beside it.",
)
@config_option
@click.pass_context
def cases_export(ctx: click.Context, number: int, out: Path | None) -> None:
    """Every message in and out of case N as an mbox, and the case as JSON."""
    from gateway import cli_cases

    run_action(ctx, cli_cases.export_case, number=number, out=out)


@cases.command("purge")
@click.option("--dry-run", is_flag=True, help="Only list the case numbers that would go.")
@config_option
@click.pass_context
def cases_purge(ctx: click.Context, dry_run: bool) -> None:
    """Apply retention now: remove the personal data of closed cases that are due."""
    from gateway import cli_cases

    run_action(ctx, cli_cases.purge_cases, dry_run=dry_run)


COMMANDS = (ingest, import_mail, cases)
