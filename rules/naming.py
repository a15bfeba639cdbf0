"""Whether a text names someone: whole addresses (normalised) and full names on word boundaries."""

from __future__ import annotations

import re
from collections.abc import Iterator

from rules.addresses import AddressError, normalise

# RFC 5321 section 4.5.3.1: a local part is at most 64 octets, a domain at most 255.
MAX_LOCAL = 64
MAX_DOMAIN = 255
_LOCAL_CHAR = r"[\w.!#$%&'*+/=?^`{|}~-]"
# Anchored at the end of a window that ends just before an "@": the local part before it.
_LOCAL = re.compile(_LOCAL_CHAR + f"{{1,{MAX_LOCAL}}}\\Z")
_LOCAL_ONE = re.compile(_LOCAL_CHAR)
_DOMAIN = re.compile(r"[\w-]+(?:\.[\w-]+)+")
_AT = re.compile("@")
_MARKS = "*_~"


def _candidates(text: str) -> Iterator[str]:
    """Every `local@domain` token, found from each "@" outwards.

    Scanning from the "@" signs (not with one regex over the text) keeps a megabyte of
    word characters linear: each token is read at most MAX_LOCAL + MAX_DOMAIN characters.
    """
    for at in _AT.finditer(text):
        start = at.start()
        window = text[max(0, start - MAX_LOCAL) : start]
        local = _LOCAL.search(window)
        if local is None:
            continue
        begin = start - len(local.group())
        if begin > 0 and len(local.group()) == MAX_LOCAL and _LOCAL_ONE.match(text, begin - 1):
            continue  # a longer run than any local part: not an address we could match
        domain = _DOMAIN.match(text[start + 1 : start + 1 + MAX_DOMAIN])
        if domain is not None:
            token = f"{local.group().lstrip('.')}@{domain.group()}"
            yield token
            # HTML rendered as text marks <b>, <i> and <s> with *, _ and ~ around words:
            # `**alice@example.org**` names alice. Both readings count; naming someone who
            # is not there only keeps a report from them, never shows it to anyone more.
            bare = f"{local.group().lstrip(_MARKS + '.')}@{domain.group().rstrip(_MARKS)}"
            if bare != token:
                yield bare


def addresses_in(text: str) -> frozenset[str]:
    """The addresses a text contains, normalised as in SPEC section 6 (`jimbob@` is not `bob@`)."""
    found = set()
    for token in _candidates(text):
        try:
            found.add(normalise(token))
        except AddressError:
            continue
    return frozenset(found)


def full_name_pattern(name: str) -> re.Pattern[str] | None:
    """A display name of two or more words, matched whole and case-insensitively; a single
    word ("Bob") would match too much ordinary text, so it names no one."""
    words = name.split()
    if len(words) < 2:
        return None
    body = r"\s+".join(re.escape(word) for word in words)
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


def names(text: str, name: str) -> bool:
    pattern = full_name_pattern(name)
    return pattern is not None and pattern.search(text) is not None
