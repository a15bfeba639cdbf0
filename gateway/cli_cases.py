"""What `ingest`, `import` and `cases …` do (SPEC section 9); cli.py holds options and help."""

from __future__ import annotations

import json
import mailbox
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from gateway import cli_render, importer
from gateway.cli_bans import Refused
from gateway.config import Settings
from gateway.secret import load as load_secrets
from rules.envelope import recover
from rules.line_endings import normalise_line_endings
from storage import case_records, inbox
from storage.case_records import CaseDetail, CaseSummary
from storage.db import Database


def _now() -> datetime:
    return datetime.now(UTC)


def summary_json(case: CaseSummary) -> dict[str, Any]:
    iso = cli_render.iso
    return {
        "number": case.number,
        "status": case.status,
        "subject": case.subject,
        "reporter": case.reporter,
        "anonymous": case.anonymous,
        "urgent": case.urgent,
        "assignee": case.assignee,
        "outcome": case.outcome,
        "escalated": case.escalated,
        "accused_notified": case.accused_notified,
        "imported": case.imported,
        "expunge_at": iso(case.expunge_at),
        "created_at": iso(case.created_at),
        "updated_at": iso(case.updated_at),
    }


def detail_json(case: CaseDetail, now: datetime) -> dict[str, Any]:
    iso = cli_render.iso
    data = summary_json(case.summary)
    data["participants"] = [{"address": a, "role": r} for a, r in case.participants]
    data["messages"] = [
        {
            "message_id": m.message_id,
            "direction": m.direction,
            "kind": m.kind,
            "sender": m.sender,
            "recipients": list(m.recipients),
            "subject": m.subject,
            "at": iso(m.at),
            "rule": m.rule,
        }
        for m in case.messages
    ]
    data["events"] = [
        {"at": iso(e.at), "actor": e.actor, "action": e.action, "detail": _detail(e.detail)}
        for e in case.events
    ]
    data["bans"] = [cli_render.ban_json(b, now) for b in case.bans]
    data["sanctions"] = [
        {"kind": s.kind, "at": iso(s.at), "until": iso(s.until), "note": s.note}
        for s in case.sanctions
    ]
    return data


def _detail(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def ingest(
    settings: Settings,
    database: Database,
    *,
    data: bytes,
    sender: str | None,
    recipients: tuple[str, ...],
) -> int:
    """Store one message; the caller exits 0 only after this returns (the commit is done)."""
    raw = normalise_line_endings(data)
    if not raw.strip():
        raise Refused("the message is empty")
    envelope = recover(raw, settings.gateway.conduct_address)
    with database.transaction() as session:
        stored = inbox.store(
            session,
            raw=raw,
            envelope_sender=sender if sender is not None else envelope.sender,
            recipients=recipients or envelope.recipients or (settings.gateway.conduct_address,),
            source="ingest",
            now=_now(),
        )
    return stored.id


def list_cases(
    settings: Settings, database: Database, *, status: str | None, as_json: bool
) -> None:
    with database.transaction() as session:
        found = case_records.summaries(session, status)
    if as_json:
        click.echo(
            json.dumps(
                [{**summary_json(c), "messages": c.messages} for c in found],
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    zone = settings.reminders.timezone
    for case in found:
        flags = ("U" if case.urgent else "-") + ("I" if case.imported else "-")
        click.echo(
            f"#{case.number:<6} {case.status:<13} {flags} "
            f"{cli_render.local(case.created_at, zone)}  {case.messages:>4} msgs  "
            f"{(case.subject or '')[:60]}"
        )


def _detail_or_refuse(database: Database, number: int) -> CaseDetail:
    with database.transaction() as session:
        found = case_records.detail(session, number)
    if found is None:
        raise Refused(f"no case #{number}")
    return found


def show_case(settings: Settings, database: Database, *, number: int, as_json: bool) -> None:
    case = _detail_or_refuse(database, number)
    data = detail_json(case, _now())
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    zone = settings.reminders.timezone
    s = case.summary
    click.echo(f"Case #{s.number}: {s.subject or '(no subject)'}")
    click.echo(
        f"  status {s.status}, urgent {s.urgent}, anonymous {s.anonymous}, "
        f"escalated {s.escalated}, outcome {s.outcome or '-'}"
    )
    click.echo(f"  opened {cli_render.local(s.created_at, zone)}")
    click.echo("Participants:")
    for address, role in case.participants:
        click.echo(f"  {role:<9} {address}")
    click.echo("Messages:")
    for m in case.messages:
        click.echo(
            f"  {cli_render.local(m.at, zone)}  {m.direction:<3} {m.kind:<15} "
            f"{m.rule or '':<14} {m.subject or ''}"
        )
    click.echo("Events:")
    for e in case.events:
        click.echo(f"  {cli_render.local(e.at, zone)}  {e.action:<28} {e.actor or '-'}")


def export_case(
    settings: Settings,
    database: Database,
    *,
    number: int,
    out: Path | None,
) -> None:
    """FILE is an mbox of every message in and out; FILE.json beside it the case's JSON."""
    case = _detail_or_refuse(database, number)
    target = out or Path(f"case-{number}.mbox")
    json_path = target.with_name(target.name + ".json")
    try:
        count = _write_mbox(database, number, target)
        json_path.write_text(
            json.dumps(detail_json(case, _now()), indent=2, ensure_ascii=False) + "\n",
            encoding="utf-8",
        )
    except OSError as error:
        # A missing directory or a read-only one is the operator's --out: input refused.
        raise Refused(f"cannot write {error.filename or target}: {error.strerror}") from None
    click.echo(f"wrote {count} messages to {target} and the case to {json_path}")


def _write_mbox(database: Database, number: int, target: Path) -> int:
    if target.exists():
        target.unlink()
    box = mailbox.mbox(target, create=True)
    count = 0
    try:
        box.lock()
        with database.transaction() as session:
            for direction, at, raw in case_records.raw_messages(session, number):
                # Bytes go in unchanged; only the mbox "From " separator line is ours.
                sender = "conduct-gateway" if direction == "out" else "incoming"
                stamp = time.asctime(time.gmtime(at.timestamp()))
                box.add(f"From {sender} {stamp}\n".encode() + raw)
                count += 1
        box.flush()
    finally:
        box.unlock()
        box.close()
    return count


def import_path(settings: Settings, database: Database, *, path: Path) -> None:
    secrets = load_secrets(settings, create=True)
    try:
        box = importer.open_mailbox(path)
        total = len(box)
        box.close()
    except importer.MailboxError as error:
        raise Refused(str(error)) from None
    console = Console(stderr=True)
    columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("import", total=total)
        summary = importer.run(
            database, settings, secrets, path, _now, lambda: progress.advance(task)
        )
    click.echo(
        f"{summary.messages} messages: {summary.cases_opened} cases opened, "
        f"{summary.joined} joined a case, {summary.unfiled} unfiled, "
        f"{summary.duplicates} already imported, {summary.failed} failed"
    )
    if summary.failed:
        raise Refused(
            f"{summary.failed} messages could not be imported; see the log above "
            "and run the import again"
        )


def _say_postponed(postponed: dict[int, int], verb: str) -> None:
    """A due case whose mail is still in the outbox is purged only once it is sent."""
    for number, mails in sorted(postponed.items()):
        click.echo(f"case {number} {verb}: {mails} of its mails are still in the outbox", err=True)


def purge_cases(settings: Settings, database: Database, *, dry_run: bool) -> None:
    """`cases purge [--dry-run]`: SPEC section 7a, now, IMAP originals included."""
    from gateway import retention_job
    from storage import purge

    now = _now()
    if dry_run:
        with database.transaction() as session:
            planned = purge.plan(session, now)
        ready = planned.ready
        click.echo("\n".join(str(n) for n in ready) if ready else "no case is due")
        _say_postponed(planned.postponed, "would wait")
        return
    done = retention_job.apply(settings, database, now)
    due = done.purged
    click.echo(f"purged {len(due)} cases" + (": " + ", ".join(map(str, due)) if due else ""))
    _say_postponed(done.postponed, "waits")
    if done.originals_deleted:
        click.echo(
            f"deleted {done.originals_deleted} originals from IMAP {settings.imap.processed_folder}"
        )
    if done.originals_pending:
        click.echo(
            f"the IMAP server could not be reached: {done.originals_pending} originals are left "
            "for the next run (daily, or `cases purge`)",
            err=True,
        )
