"""Explains a line configparser cannot read: its number, its text, its section, what fits."""

from __future__ import annotations

import configparser
import re

from gateway.config_values import mask_password

# A key naming a password may carry one on a line that is not `key = value` (SPEC 10).
_PASSWORD_KEY = re.compile(r"[^\s:=]*password[^\s:=]*[\s:=]+(?=\S)", re.IGNORECASE)
_SECTION = configparser.ConfigParser.SECTCRE


def explain(text: str, error: configparser.Error) -> tuple[str, str | None] | None:
    """The problem and the section the bad line falls in, or None for another error.

    configparser says only "Source contains parsing errors" with the line's repr; the
    operator needs the line number, the text as written and what would have been read.
    """
    if isinstance(error, configparser.MissingSectionHeaderError):
        number = error.lineno
    elif isinstance(error, configparser.ParsingError) and error.errors:
        number = error.errors[0][0]
    else:
        return None
    # configparser reads the text line by line on "\n" alone (io.StringIO).
    lines = text.split("\n")
    line = lines[number - 1].strip() if number <= len(lines) else ""
    where = f"line {number}: {_shown(line)!r}: expected "
    if line.startswith("["):
        name = line[1:].split("]", 1)[0].strip() or "section"
        return where + f"a section header closed by ']', such as '[{name}]'", None
    section = _section_before(lines[: number - 1])
    if section is None:
        return where + "a '[section]' header before the first key", None
    return where + "'key = value' or a '[section]' header", section


def _shown(line: str) -> str:
    text = mask_password(line)
    found = _PASSWORD_KEY.match(text)
    return text[: found.end()] + "***" if found else text


def _section_before(lines: list[str]) -> str | None:
    section = None
    for line in lines:
        found = _SECTION.match(line.strip())
        if found:
            section = found.group("header")
    return section
