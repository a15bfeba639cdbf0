"""Bodies, attachments and defects of a raw message: typed wrappers over the parsing libraries."""

from __future__ import annotations

import email.message
import email.parser
import email.policy
from dataclasses import dataclass
from typing import Any

import html2text
import mailparser
import tnefparse

from handlers.message import Attachment
from rules.threading import reference_chain

TNEF_TYPES = {"application/ms-tnef", "application/vnd.ms-tnef"}
MAX_TEXT = 2 * 1024 * 1024  # a text rendering longer than this is cut (and says so)


@dataclass(frozen=True)
class Parts:
    text: str
    html_only: bool
    attachments: tuple[Attachment, ...]
    defects: tuple[str, ...]
    reported_message_ids: tuple[str, ...]


def _decode(part: email.message.Message) -> str:
    """A text part's content in its declared charset, falling back rather than failing."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = (part.get_content_charset() or "us-ascii").lower()
    for candidate in (charset, "utf-8", "cp1252"):
        try:
            return payload.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    return payload.decode("latin-1")


def html_to_text(html: str) -> str:
    converter = html2text.HTML2Text()
    converter.body_width = 0
    converter.ignore_images = True
    converter.ignore_tables = False
    return str(converter.handle(html))


def _tree(raw: bytes) -> email.message.Message:
    # compat32 keeps broken parts as they are; policy.default may raise on some.
    return email.parser.BytesParser().parsebytes(raw)


def _is_attachment(part: email.message.Message) -> bool:
    disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
    return disposition == "attachment" or bool(part.get_filename())


def _bodies(root: email.message.Message) -> tuple[str | None, str | None]:
    plain: str | None = None
    html: str | None = None
    for part in root.walk():
        if part.is_multipart() or _is_attachment(part):
            continue
        kind = part.get_content_type()
        if kind == "text/plain" and plain is None:
            plain = _decode(part)
        elif kind == "text/html" and html is None:
            html = _decode(part)
    return plain, html


def _tnef(data: bytes) -> tuple[str | None, list[Attachment]]:
    """Outlook's winmail.dat: its plain body (if any) and its attachments' names."""
    try:
        tnef: Any = tnefparse.TNEF(data, do_checksum=False)
    except Exception:  # tnefparse raises bare exceptions on damaged data
        return None, []
    body = getattr(tnef, "body", None)
    text = body.decode("cp1252", "replace") if isinstance(body, bytes) else None
    attachments = [
        Attachment(
            str(a.long_filename() or a.name),
            "application/octet-stream",
            len(getattr(a, "data", b"") or b""),
        )
        for a in getattr(tnef, "attachments", [])
    ]
    return text, attachments


def _attachments(root: email.message.Message) -> tuple[list[Attachment], str | None]:
    found: list[Attachment] = []
    tnef_text: str | None = None
    for part in root.walk():
        if part.is_multipart() or not _is_attachment(part):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        kind = part.get_content_type()
        name = part.get_filename() or "unnamed"
        if kind in TNEF_TYPES or name.lower() == "winmail.dat":
            text, inner = _tnef(data)
            tnef_text = tnef_text or text
            found.extend(inner)
        found.append(Attachment(str(name), kind, len(data)))
    return found, tnef_text


def _reported_ids(root: email.message.Message) -> tuple[str, ...]:
    """The Message-IDs a delivery status notification reports on (RFC 3464 section 2)."""
    if root.get_content_type() != "multipart/report":
        return ()
    ids: list[str] = []
    for part in root.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822" and part.is_multipart():
            inner = part.get_payload(0)
            if isinstance(inner, email.message.Message):
                ids.extend(reference_chain(inner.get("Message-ID"), None))
        elif kind in ("text/rfc822-headers", "message/rfc822-headers"):
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
            headers = email.parser.BytesParser().parsebytes(data, headersonly=True)
            ids.extend(reference_chain(headers.get("Message-ID"), None))
    return tuple(dict.fromkeys(ids))


def _library_defects(raw: bytes) -> list[str]:
    try:
        parsed = mailparser.parse_from_bytes(raw)
        return [str(d) for d in parsed.defects_categories]
    except Exception:  # mail-parser is a library over hostile input; it must not decide
        return ["mail-parser-failed"]


def extract(raw: bytes) -> Parts:
    root = _tree(raw)
    plain, html = _bodies(root)
    attachments, tnef_text = _attachments(root)
    html_only = plain is None and html is not None
    text = (
        plain
        if plain is not None
        else html_to_text(html)
        if html is not None
        else (tnef_text or "")
    )
    defects = [type(d).__name__ for p in root.walk() for d in p.defects]
    defects += _library_defects(raw)
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + "\n[... cut: the whole message is attached ...]\n"
        defects.append("text-cut")
    return Parts(
        text, html_only, tuple(attachments), tuple(dict.fromkeys(defects)), _reported_ids(root)
    )
