"""Parses raw bytes into a ParsedMessage: standard `email` for headers, mail-parser for parts."""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import email.utils
import re
from datetime import datetime

from gateway import delivery_status, mail_parts
from handlers.message import EnclosedMessage, ParsedMessage
from rules.addresses import AddressError, normalise, parse_header_addresses
from rules.loops import LoopFacts
from rules.threading import reference_chain

MAX_HEADER_VALUE = 8192  # longer fields are cut: a 1 MB Subject decides nothing
MAX_RAW_HEADER = 8 * MAX_HEADER_VALUE  # room for RFC 2047 encoded words, which decode shorter
# RFC 5321 section 4.5.3.1.3: a path is at most 256 octets, angle brackets included, so no
# mail can be sent to (or have come from) a longer address; storage columns hold 320.
MAX_ADDRESS_OCTETS = 254
_LINE_BREAKS = re.compile(r"[\r\n]")


def _headers(raw: bytes) -> email.message.EmailMessage:
    parser = email.parser.BytesParser(policy=email.policy.default)
    message = parser.parsebytes(raw, headersonly=True)
    assert isinstance(message, email.message.EmailMessage)
    return message


def _raw_value(message: email.message.EmailMessage, name: str) -> str | None:
    for key, value in message.raw_items():
        if key.lower() == name.lower():
            return str(value)
    return None


def _value(message: email.message.EmailMessage, name: str) -> str | None:
    """The first such field's decoded value; broken encodings degrade to the raw text."""
    raw = _raw_value(message, name)
    if raw is None:
        return None
    # Unfolded as policy.header_fetch_parse does; cut first, because the stdlib's header
    # parser is quadratic (a 1 MB Subject took 30 s); undeclared 8-bit read as the body is.
    text = mail_parts.repair_8bit(_LINE_BREAKS.sub("", raw[:MAX_RAW_HEADER]))
    try:
        value = str(email.policy.default.header_factory(name, text))
    # The stdlib header parsers have raised ValueError, IndexError and HeaderParseError
    # on hostile input; a header is data, never a crash.
    except Exception:
        value = text
    return " ".join(value.split())[:MAX_HEADER_VALUE]


def _from(message: email.message.EmailMessage) -> tuple[str, str | None, str | None]:
    value = _value(message, "From")
    if value is None:
        return "", None, None
    found = parse_header_addresses(value)
    if not found:
        return "", None, None
    name, written = found[0]
    try:
        address = normalise(written)
    except AddressError:
        return name, None, None
    if max(_octets(written), _octets(address)) > MAX_ADDRESS_OCTETS:
        # Not an address anyone can be answered at: handled as one that does not parse,
        # so a report is acknowledged to the envelope sender (SPEC section 5).
        return name, None, None
    return name, address, written


def _octets(address: str) -> int:
    return len(address.encode("utf-8", "replace"))


def _addresses(message: email.message.EmailMessage, *names: str) -> tuple[str, ...]:
    result: list[str] = []
    for name in names:
        for _, written in parse_header_addresses(_value(message, name) or ""):
            try:
                result.append(normalise(written))
            except AddressError:
                continue
    return tuple(dict.fromkeys(result))


def _enclosed(found: mail_parts.Enclosed) -> EnclosedMessage:
    """An attached message's header fields, decoded as the report's own are."""
    headers = _headers(found.header)
    people = ("From", "To", "Cc", "Reply-To", "Sender")
    header_text = " ".join(filter(None, (_value(headers, n) for n in (*people, "Subject"))))
    return EnclosedMessage(_addresses(headers, *people), header_text, found.text)


def _date(message: email.message.EmailMessage) -> datetime | None:
    value = _value(message, "Date")
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo is not None else None


def _message_id(message: email.message.EmailMessage) -> str | None:
    chain = reference_chain(_value(message, "Message-ID"), None)
    return chain[0] if chain else None


def _report_type(message: email.message.EmailMessage) -> str | None:
    if message.get_content_type() != "multipart/report":
        return None
    value = message.get_param("report-type")
    return value.lower() if isinstance(value, str) else None


def parse(raw: bytes, envelope_sender: str | None) -> ParsedMessage:
    """Never raises on bad mail: every problem becomes a defect."""
    headers = _headers(raw)
    name, address, written = _from(headers)
    subject = _value(headers, "Subject") or ""
    content_type = headers.get_content_type()
    parts = mail_parts.extract(raw)
    loop = LoopFacts(
        envelope_sender=envelope_sender,
        from_address=address,
        auto_submitted=_value(headers, "Auto-Submitted"),
        precedence=_value(headers, "Precedence"),
        list_id=_value(headers, "List-Id"),
        x_autoreply=_value(headers, "X-Autoreply"),
        x_autorespond=_value(headers, "X-Autorespond"),
        content_type=content_type,
        report_type=_report_type(headers),
        subject=subject,
    )
    # Not From: a reporter's own name or address never names a staff member (issue 10).
    header_text = " ".join(filter(None, (_value(headers, n) for n in ("To", "Cc", "Subject"))))
    return ParsedMessage(
        message_id=_message_id(headers),
        from_name=name,
        from_address=address,
        from_written=written,
        subject=subject,
        date=_date(headers),
        references=reference_chain(_value(headers, "In-Reply-To"), _value(headers, "References")),
        to_cc=_addresses(headers, "To", "Cc"),
        header_text=header_text,
        text=parts.text,
        html_only=parts.html_only,
        attachments=parts.attachments,
        defects=tuple(str(d) for d in headers.defects) + parts.defects,
        loop=loop,
        reported_message_ids=parts.reported_message_ids,
        delivery_status=delivery_status.extract(raw) if content_type == "multipart/report" else (),
        enclosed=tuple(_enclosed(found) for found in parts.enclosed),
    )
