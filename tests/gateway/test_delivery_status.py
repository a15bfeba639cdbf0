"""A DSN's per-recipient fields: only a reported failure may mark outbound mail failed."""

from __future__ import annotations

import base64
from pathlib import Path

from gateway.delivery_status import extract
from gateway.parsing import parse

DATA = Path(__file__).parent.parent / "data"


def test_a_real_dsn_reports_its_failed_recipient_status_and_diagnostic() -> None:
    [status] = parse((DATA / "dsn-bounce.eml").read_bytes(), None).delivery_status
    assert status.recipient == "nobody@gone.example"
    assert status.action == "failed"
    assert status.status == "5.1.1"
    assert status.diagnostic.startswith("smtp; 550 5.1.1")


def test_mail_that_is_not_a_delivery_report_has_no_status() -> None:
    assert parse((DATA / "auto-reply-ooo.eml").read_bytes(), None).delivery_status == ()


def test_an_encoded_status_part_and_several_recipients_are_read() -> None:
    fields = (
        b"Reporting-MTA: dns; mx\r\n\r\n"
        b"Final-Recipient: rfc822; a@example.org\r\nAction: delayed\r\nStatus: 4.4.1\r\n\r\n"
        b"Final-Recipient: rfc822;b@example.org\r\nAction: Failed (permanent)\r\n"
        b"Status: 5.2.2\r\nDiagnostic-Code: smtp;\r\n 552 mailbox full\r\n"
    )
    raw = (
        b"From: MAILER-DAEMON@mx\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: text/plain\r\n\r\nsorry\r\n--B\r\n"
        b"Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(fields)
        + b"--B--\r\n"
    )
    found = extract(raw)
    assert [(s.recipient, s.action, s.status) for s in found] == [
        ("a@example.org", "delayed", "4.4.1"),
        ("b@example.org", "failed", "5.2.2"),
    ]
    assert found[1].diagnostic == "smtp; 552 mailbox full"
