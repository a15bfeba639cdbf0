"""Bodies, attachments and defects of a raw message: typed wrappers over the parsing libraries."""

from __future__ import annotations

import email.errors
import email.message
import email.parser
import email.policy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import html2text
import mailparser
import tnefparse

from handlers.message import Attachment
from rules.threading import reference_chain

TNEF_TYPES = {"application/ms-tnef", "application/vnd.ms-tnef"}
# An attached message is an attachment; its body is not this message's text.
ENCLOSED_MESSAGES = {"message/rfc822", "message/global"}
# What of an attached message can name someone (SPEC section 5); parsing.py decodes them.
ENCLOSED_FIELDS = frozenset({"from", "to", "cc", "reply-to", "sender", "subject"})
FALLBACK_CHARSETS = ("utf-8", "cp1252")
MAX_TEXT = 2 * 1024 * 1024  # a text rendering longer than this is cut (and says so)


@dataclass(frozen=True)
class Enclosed:
    """A message attached whole: the header fields of ENCLOSED_FIELDS, and its text."""

    header: bytes
    text: str


@dataclass(frozen=True)
class Parts:
    text: str
    html_only: bool
    attachments: tuple[Attachment, ...]
    defects: tuple[str, ...]
    reported_message_ids: tuple[str, ...]
    enclosed: tuple[Enclosed, ...] = ()


def _decode_bytes(data: bytes, charset: str) -> str:
    for candidate in (charset, *FALLBACK_CHARSETS):
        try:
            return data.decode(candidate)
        # ValueError: a charset name with a NUL in it ("embedded null character").
        except (LookupError, UnicodeDecodeError, ValueError):
            continue
    return data.decode("latin-1")


def repair_8bit(text: str) -> str:
    """Undoes the surrogate escapes of undeclared 8-bit bytes: UTF-8 (RFC 6532), else cp1252."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return _decode_bytes(text.encode("utf-8", "surrogateescape"), "utf-8")
        except UnicodeEncodeError:  # a surrogate no parser escape made
            return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _unflow(text: str, delsp: bool) -> str:
    """Joins the soft line breaks of format=flowed text (RFC 3676 section 4.2)."""
    lines: list[tuple[int, str]] = []
    joining = False
    for line in text.splitlines():
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:].removeprefix(" ")  # quote marks, then space-stuffing
        flowed = content.endswith(" ") and content != "-- "  # the signature line never flows
        if flowed and delsp:
            content = content[:-1]
        if joining and lines and lines[-1][0] == depth:
            lines[-1] = (depth, lines[-1][1] + content)
        else:
            lines.append((depth, content))
        joining = flowed
    newline = "\r\n" if "\r\n" in text else "\n"
    rendered = (
        ">" * depth + (" " if depth and content else "") + content for depth, content in lines
    )
    return newline.join(rendered) + (newline if text.endswith(("\n", "\r")) else "")


def _param(part: email.message.Message, name: str) -> str:
    value = part.get_param(name)
    return value.lower() if isinstance(value, str) else ""


def _decode(part: email.message.Message) -> str:
    """A text part's content in its declared charset, falling back rather than failing."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    text = _decode_bytes(payload, (part.get_content_charset() or "us-ascii").lower())
    if part.get_content_type() == "text/plain" and _param(part, "format") == "flowed":
        return _unflow(text, _param(part, "delsp") == "yes")
    return text


def html_to_text(html: str) -> str:
    converter = html2text.HTML2Text()
    converter.body_width = 0
    converter.ignore_images = True
    converter.ignore_tables = False
    return str(converter.handle(html))


def _repair_headers(part: email.message.Message) -> None:
    # compat32 hands back 8-bit header values as Header objects that str() to U+FFFD,
    # and those break string handling (a raw UTF-8 filename is common).
    items = list(part.raw_items())
    if all(repair_8bit(str(value)) == value for _, value in items):
        return
    for name in {name for name, _ in items}:
        del part[name]
    for name, value in items:
        part[name] = repair_8bit(str(value))


def _tree(raw: bytes) -> email.message.Message:
    # compat32 keeps broken parts as they are; policy.default may raise on some.
    root = email.parser.BytesParser().parsebytes(raw)
    for part in root.walk():
        _repair_headers(part)
    return root


def _leaves(part: email.message.Message, top: bool = True) -> Iterator[email.message.Message]:
    """The parts that hold content, not descending into attached messages or reports."""
    if not part.is_multipart() or (not top and part.get_content_maintype() == "message"):
        yield part
        return
    for child in part.get_payload():
        if isinstance(child, email.message.Message):
            yield from _leaves(child, top=False)


def _is_attachment(part: email.message.Message) -> bool:
    if part.get_content_type() in ENCLOSED_MESSAGES:
        return True
    disposition = str(part.get("Content-Disposition") or "").split(";")[0].strip().lower()
    return disposition == "attachment" or bool(part.get_filename())


def _bodies(root: email.message.Message) -> tuple[str | None, str | None]:
    plain: str | None = None
    html: str | None = None
    broken: str | None = None
    for part in _leaves(root):
        if _is_attachment(part):
            continue
        kind = part.get_content_type()
        if kind == "text/plain" and plain is None:
            plain = _decode(part)
        elif kind == "text/html" and html is None:
            html = _decode(part)
        elif part.get_content_maintype() == "multipart" and broken is None:
            # Its boundary never appears (StartBoundaryNotFoundDefect), so the parser left
            # it as one text: the last resort, rather than an empty body.
            broken = _decode(part)
    return (broken if plain is None and html is None else plain), html


def _tnef_name(attachment: Any) -> str:
    try:
        name = attachment.long_filename() or attachment.name
    except UnicodeDecodeError:  # tnefparse reads the title as UTF-8; Outlook writes its codepage
        name = getattr(attachment, "_name", b"")
    if isinstance(name, bytes):
        name = name.decode("cp1252", "replace")
    return str(name).strip("\x00") or "unnamed"


def _tnef(data: bytes) -> tuple[str | None, list[Attachment]]:
    """Outlook's winmail.dat: its plain body (if any) and its attachments' names."""
    try:
        tnef: Any = tnefparse.TNEF(data, do_checksum=False)
    except Exception:  # tnefparse raises bare exceptions on damaged data
        return None, []
    body = getattr(tnef, "body", None)
    text = body.decode("cp1252", "replace") if isinstance(body, bytes) else body
    attachments = [
        Attachment(_tnef_name(a), "application/octet-stream", len(getattr(a, "data", b"") or b""))
        for a in getattr(tnef, "attachments", [])
    ]
    return (text if isinstance(text, str) else None), attachments


def _content(part: email.message.Message) -> bytes:
    if not part.is_multipart():
        payload = part.get_payload(decode=True)
        return payload if isinstance(payload, bytes) else b""
    inner = part.get_payload(0)
    if not isinstance(inner, email.message.Message):
        return b""
    try:
        return inner.as_bytes(policy=email.policy.compat32.clone(linesep="\r\n"))
    # The generator refuses some broken headers (HeaderParseError): the size is then unknown.
    except (email.errors.MessageError, LookupError, UnicodeError, ValueError, TypeError):
        return b""


def _attachments(root: email.message.Message) -> tuple[list[Attachment], str | None]:
    found: list[Attachment] = []
    tnef_text: str | None = None
    for part in _leaves(root):
        if not _is_attachment(part):
            continue
        data = _content(part)
        kind = part.get_content_type()
        name = part.get_filename() or ("message.eml" if kind in ENCLOSED_MESSAGES else "unnamed")
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
                ids.extend(reference_chain(str(inner.get("Message-ID") or ""), None))
        elif kind in ("text/rfc822-headers", "message/rfc822-headers"):
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
            headers = email.parser.BytesParser().parsebytes(data, headersonly=True)
            ids.extend(reference_chain(str(headers.get("Message-ID") or ""), None))
    return tuple(dict.fromkeys(ids))


def _rendered(plain: str | None, html: str | None) -> str:
    return plain if plain is not None else html_to_text(html) if html is not None else ""


def _header_block(message: email.message.Message) -> bytes:
    fields = (
        f"{name}: {value}\r\n"
        for name, value in message.raw_items()
        if name.lower() in ENCLOSED_FIELDS
    )
    return "".join(fields).encode("utf-8", "replace")


def _enclosed(root: email.message.Message) -> tuple[Enclosed, ...]:
    """Every attached message, nested ones too (`walk` descends into them): a report that
    forwards a message as an attachment says what that message says."""
    found: list[Enclosed] = []
    for part in root.walk():
        if part.get_content_type() not in ENCLOSED_MESSAGES or not part.is_multipart():
            continue
        inner = part.get_payload(0)
        if isinstance(inner, email.message.Message):
            text = _rendered(*_bodies(inner))[:MAX_TEXT]
            found.append(Enclosed(_header_block(inner), text))
    return tuple(found)


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
    text = _rendered(plain, html) if plain is not None or html is not None else (tnef_text or "")
    defects = [type(d).__name__ for p in root.walk() for d in p.defects]
    defects += _library_defects(raw)
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + "\n[... cut: the whole message is attached ...]\n"
        defects.append("text-cut")
    return Parts(
        text,
        html_only,
        tuple(attachments),
        tuple(dict.fromkeys(defects)),
        _reported_ids(root),
        _enclosed(root),
    )
