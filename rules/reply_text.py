"""The new text of a reply: what stands above its quote, attribution, header block or signature."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

# Attributions and header lines are short; longer lines are never one, which also
# bounds the regex work per line so a huge body is split in linear time.
_ATTRIBUTION_MAX = 400
_HEADER_PREFIX = 120
# An Outlook header block: the From line, then Sent/Date and To/Subject within this many lines.
_HEADER_WINDOW = 6

_VERB = re.compile(
    r".*\b(?:wrote|schrieb|a\s+écrit|escribió|schreef|ha\s+scritto|escreveu|skrev)\b.*:",
    re.IGNORECASE,
)
_OPENER = re.compile(r"(?:on|am|le|el|op|il|em|den)\s", re.IGNORECASE)
_DIGIT = re.compile(r"\d")
_QUOTE = re.compile(r"[ \t]*>")
_ORIGINAL = re.compile(r"-{3,}\s*[^\W\d_][^-]*?\s*-{3,}")
_FROM = re.compile(r"[\s*_]*(?:from|von|de|van|da|från|fra|od)[\s*_]*:", re.IGNORECASE)
_SENT = re.compile(
    r"[\s*_]*(?:sent|date|gesendet|datum|envoyé|enviado|fecha|data|verzonden|inviato"
    r"|skickat|sendt)[\s*_]*:",
    re.IGNORECASE,
)
_TO = re.compile(
    r"[\s*_]*(?:to|subject|an|betreff|à|a|objet|para|asunto|aan|onderwerp|oggetto|assunto"
    r"|till|ämne|til|emne)[\s*_]*:",
    re.IGNORECASE,
)
_SIGNATURE = frozenset({"-- ", "--"})
# Outlook and HTML renderings leave a rule above the header block.
_SEPARATOR = re.compile(r"[\s_\-=*]*")


class Cut(Enum):
    """What ended the new text."""

    QUOTE = "quote"
    ATTRIBUTION = "attribution"
    ORIGINAL_MESSAGE = "original-message"
    HEADER_BLOCK = "header-block"
    SIGNATURE = "signature"


@dataclass(frozen=True)
class ReplySplit:
    """The new text, and what cut it off at which 0-based line (None: nothing did)."""

    new: str
    cut: Cut | None
    line: int | None


def new_text(body: str) -> str:
    """The text above the first quote, attribution, Outlook header block or signature."""
    return split_reply(body).new


def split_reply(body: str) -> ReplySplit:
    """Split `body` (plain text) where the quoted or signed part begins."""
    lines = body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for index, line in enumerate(lines):
        cut = _cut_at(lines, index, line)
        if cut is not None:
            return ReplySplit(_above(lines[:index]), cut, index)
    return ReplySplit(_above(lines), None, None)


def _cut_at(lines: list[str], index: int, line: str) -> Cut | None:
    if line in _SIGNATURE:
        return Cut.SIGNATURE
    if _QUOTE.match(line):
        return Cut.QUOTE
    stripped = line.strip()
    if len(stripped) <= _HEADER_PREFIX and _ORIGINAL.fullmatch(stripped):
        return Cut.ORIGINAL_MESSAGE
    if _is_header_block(lines, index):
        return Cut.HEADER_BLOCK
    if _is_attribution(lines, index):
        return Cut.ATTRIBUTION
    return None


def _is_header_block(lines: list[str], index: int) -> bool:
    if not _FROM.match(lines[index][:_HEADER_PREFIX]):
        return False
    following = [line[:_HEADER_PREFIX] for line in lines[index + 1 : index + 1 + _HEADER_WINDOW]]
    return any(_SENT.match(line) for line in following) and any(
        _TO.match(line) for line in following
    )


def _is_attribution(lines: list[str], index: int) -> bool:
    line = lines[index].strip()
    if _attribution_text(line, _next_is_quote(lines, index + 1)):
        return True
    # A client that wraps a long attribution leaves "On <date> … <" above "addr> wrote:".
    if index + 1 >= len(lines) or not _wrapped_start(line):
        return False
    joined = f"{line} {lines[index + 1].strip()}"
    return _attribution_text(joined, _next_is_quote(lines, index + 2))


def _wrapped_start(line: str) -> bool:
    # A finished sentence above a one-line attribution is new text, not its first half.
    return (
        _OPENER.match(line) is not None
        and _DIGIT.search(line) is not None
        and not line.endswith((".", "!", "?"))
    )


def _attribution_text(text: str, quote_follows: bool) -> bool:
    if len(text) > _ATTRIBUTION_MAX or not text.endswith(":") or not _VERB.fullmatch(text):
        return False
    # Prose such as "Here is what she wrote:" has no date or address; a real
    # attribution has one, or at least stands right above a quote.
    dated = _OPENER.match(text) is not None and _DIGIT.search(text) is not None
    return quote_follows or "@" in text or dated


def _next_is_quote(lines: list[str], start: int) -> bool:
    for line in lines[start : start + _HEADER_WINDOW]:
        if line.strip():
            return _QUOTE.match(line) is not None
    return False


def _above(lines: list[str]) -> str:
    end = len(lines)
    while end and _SEPARATOR.fullmatch(lines[end - 1][:_HEADER_PREFIX]) and _short(lines[end - 1]):
        end -= 1
    return "\n".join(lines[:end]).rstrip()


def _short(line: str) -> bool:
    return len(line) <= _HEADER_PREFIX
