"""Ban patterns (SPEC section 6), the index that finds the ban covering an address, and imports."""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from rules import re2set
from rules.addresses import AddressError, normalise, normalise_domain, normalise_list
from rules.errors import GatewayError

# A made-up local part: a regex that catches it at a local domain is taken to catch
# every address there (protected_hits).
PROBE_LOCAL = "x9q7-probe"

_SECTION6_WILDCARD = re.compile(r"\*@(?:\*\.)?[^*@]+")
_BLANK = re.compile(r"[\x00-\x20\x7f]")


class PatternKind(enum.Enum):
    EXACT = "exact"
    DOMAIN = "domain"
    SUBDOMAINS = "subdomains"
    REGEX = "regex"


# Most specific first: decides between bans that last equally long (BanIndex.match).
_SPECIFICITY = {
    PatternKind.EXACT: 0,
    PatternKind.DOMAIN: 1,
    PatternKind.SUBDOMAINS: 2,
    PatternKind.REGEX: 3,
}


class BadPattern(GatewayError):
    """A ban pattern (or `bans import` line) that cannot be a ban, and why."""

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f"bad ban pattern {text!r}: {reason}")
        self.text = text
        self.reason = reason


def _identity(address: str) -> tuple[str | None, str]:
    """(normalised address or None, the text regexes see); "" for the null sender."""
    try:
        normalised = normalise(address)
    except AddressError:
        text = address.strip()
        if text.startswith("<") and text.endswith(">"):
            text = text[1:-1].strip()
        return None, text.lower()
    return normalised, normalised


def _parents(domain: str) -> Iterator[str]:
    """`a.b.example.com` -> `b.example.com`, `example.com`, `com`."""
    if domain.startswith("["):
        return
    rest = domain
    while "." in rest:
        rest = rest.partition(".")[2]
        yield rest


@dataclass(frozen=True)
class BanPattern:
    """A normalised pattern; equal (and hashing alike) when it catches the same addresses.

    `value` is the normalised address (exact), the A-label domain (domain, subdomains) or
    the RE2 regex. `str()` is the canonical text that `parse_pattern` reads back.
    """

    kind: PatternKind
    value: str
    original: str = field(default="", compare=False)

    def __str__(self) -> str:
        prefix = {
            PatternKind.EXACT: "",
            PatternKind.DOMAIN: "*@",
            PatternKind.SUBDOMAINS: "*@*.",
            PatternKind.REGEX: "re:",
        }[self.kind]
        return prefix + self.value

    def matches(self, address: str) -> bool:
        """Whether it catches this address (normalised first, as BanIndex does)."""
        normalised, text = _identity(address)
        if self.kind is PatternKind.REGEX:
            return bool(text) and re2set.full_match(self.value, text)
        if normalised is None:
            return False
        domain = normalised.rpartition("@")[2]
        if self.kind is PatternKind.EXACT:
            return normalised == self.value
        if self.kind is PatternKind.DOMAIN:
            return domain == self.value
        return self.value in _parents(domain)


def _regex_pattern(regex: str, original: str) -> BanPattern:
    try:
        re2set.check_pattern(regex)
    except re2set.BadRegex as exc:
        raise BadPattern(original, f"RE2 refuses the regex: {exc.reason}") from None
    return BanPattern(PatternKind.REGEX, regex, original)


def _domain_pattern(kind: PatternKind, domain: str, original: str) -> BanPattern:
    if not domain or "*" in domain or "@" in domain:
        raise BadPattern(original, "a wildcard is only *@domain or *@*.domain")
    try:
        value = normalise_domain(domain)
    except AddressError as exc:
        raise BadPattern(original, exc.reason) from None
    if kind is PatternKind.SUBDOMAINS and value.startswith("["):
        raise BadPattern(original, "an address literal has no subdomains")
    return BanPattern(kind, value, original)


def parse_pattern(text: str) -> BanPattern:
    """`user@example.com`, `*@example.com`, `*@*.example.com` or `re:REGEX`.

    `*@*.example.com` catches every subdomain of example.com at any depth, but not
    example.com itself (ban `*@example.com` as well for that).
    """
    stripped = text.strip()
    if not stripped:
        raise BadPattern(text, "empty")
    if stripped[:3].lower() == "re:":
        regex = stripped[3:].strip()
        if not regex:
            raise BadPattern(text, "empty regex")
        return _regex_pattern(regex, stripped)
    if stripped.startswith("*@*."):
        return _domain_pattern(PatternKind.SUBDOMAINS, stripped[4:], stripped)
    if stripped.startswith("*@"):
        return _domain_pattern(PatternKind.DOMAIN, stripped[2:], stripped)
    if "*" in stripped:
        raise BadPattern(text, "a wildcard is only *@domain or *@*.domain; otherwise use re:")
    try:
        return BanPattern(PatternKind.EXACT, normalise(stripped), stripped)
    except AddressError as exc:
        raise BadPattern(text, exc.reason) from None


@dataclass(frozen=True)
class Ban:
    """One ban; `list` is a lower-case list address, None for all lists."""

    id: int
    pattern: BanPattern
    list: str | None
    reason: str | None
    created_by: str
    created_at: datetime
    expires_at: datetime | None = None
    case: int | None = None
    interim: bool = False

    def active(self, now: datetime) -> bool:
        """A timed ban stops at its exact end: it no longer applies at `expires_at`."""
        return self.expires_at is None or now < self.expires_at

    def covers_list(self, list_address: str) -> bool:
        return self.list is None or _list_key(self.list) == _list_key(list_address)


@functools.lru_cache(maxsize=4096)
def _list_key(list_address: str) -> str:
    # Bans stored before list addresses were normalised, or written with a Unicode
    # domain, still cover their list (IDNA once per distinct list, not per lookup).
    try:
        return normalise_list(list_address)
    except AddressError:
        return list_address.strip().lower()


def _preference(ban: Ban) -> tuple[tuple[int, float], bool, int, int]:
    # Longest-lasting first, so a refusal's "until DATE" is the date that really holds;
    # then a ban on this list over an all-lists one, then the most specific, then the oldest.
    lasting = (0, 0.0) if ban.expires_at is None else (1, -ban.expires_at.timestamp())
    return lasting, ban.list is None, _SPECIFICITY[ban.pattern.kind], ban.id


class BanIndex:
    """All bans, looked up in constant time per address: hash tables plus one RE2 set."""

    def __init__(self, bans: Iterable[Ban]) -> None:
        self._tables: dict[PatternKind, dict[str, list[Ban]]] = {
            PatternKind.EXACT: {},
            PatternKind.DOMAIN: {},
            PatternKind.SUBDOMAINS: {},
        }
        self._regexes = re2set.FullMatchSet()
        self._regex_bans: dict[int, list[Ban]] = {}
        regex_slots: dict[str, int] = {}
        self._size = 0
        for ban in bans:
            self._size += 1
            pattern = ban.pattern
            if pattern.kind is not PatternKind.REGEX:
                self._tables[pattern.kind].setdefault(pattern.value, []).append(ban)
                continue
            slot = regex_slots.get(pattern.value)
            if slot is None:
                slot = regex_slots[pattern.value] = self._regexes.add(pattern.value)
            self._regex_bans.setdefault(slot, []).append(ban)
        self._regexes.compile()

    def __len__(self) -> int:
        return self._size

    def _candidates(self, address: str) -> Iterator[Ban]:
        normalised, text = _identity(address)
        if not text:
            return
        if normalised is not None:
            domain = normalised.rpartition("@")[2]
            yield from self._tables[PatternKind.EXACT].get(normalised, ())
            yield from self._tables[PatternKind.DOMAIN].get(domain, ())
            for parent in _parents(domain):
                yield from self._tables[PatternKind.SUBDOMAINS].get(parent, ())
        for slot in self._regexes.match(text):
            yield from self._regex_bans[slot]

    def match_all(self, address: str, list_address: str, now: datetime) -> list[Ban]:
        """Every ban in force at `now` that stops `address` posting to `list_address`, best first.

        Never raises: an address that does not normalise is tried against regex bans only
        (on its lower-cased text); the null sender (`<>`, "") matches nothing.
        """
        found = {
            id(ban): ban
            for ban in self._candidates(address)
            if ban.active(now) and ban.covers_list(list_address)
        }
        return sorted(found.values(), key=_preference)

    def match(self, address: str, list_address: str, now: datetime) -> Ban | None:
        """The ban that decides, by the order of `match_all`; None when the post may go."""
        bans = self.match_all(address, list_address, now)
        return bans[0] if bans else None


def _covers_domain(pattern: BanPattern, domain: str) -> bool:
    if pattern.kind is PatternKind.DOMAIN:
        return pattern.value == domain
    if pattern.kind is PatternKind.SUBDOMAINS:
        return pattern.value in _parents(domain)
    if pattern.kind is PatternKind.REGEX:
        return re2set.full_match(pattern.value, f"{PROBE_LOCAL}@{domain}")
    return False


def protected_hits(
    pattern: BanPattern, protected_addresses: Iterable[str], local_domains: Iterable[str]
) -> list[str]:
    """Why `#ban` and `bans add` must refuse this pattern without force; [] when allowed.

    Protected addresses (staff, director, conduct address) are tried one by one. A local
    domain counts as covered by a domain ban on it, a subdomains ban on a parent of it,
    or a regex that catches the made-up `PROBE_LOCAL@domain` (a heuristic: a regex
    that singles out other local parts is let through).
    """
    reasons: list[str] = []
    for address in protected_addresses:
        if pattern.matches(address):
            reasons.append(f"{pattern} would catch the protected address {address}")
    for domain in local_domains:
        ascii_domain = normalise_domain(domain)
        if _covers_domain(pattern, ascii_domain):
            reasons.append(f"{pattern} would catch every address at the local domain {domain}")
    return list(dict.fromkeys(reasons))


def _sympa_wildcard(line: str) -> BanPattern:
    local, _at, domain = line.lower().partition("@")
    if not local or not domain or "@" in domain or _BLANK.search(line):
        raise BadPattern(line, "a wildcard line must look like local@domain")
    if "*" not in domain:
        try:
            domain = normalise_domain(domain)
        except AddressError as exc:
            raise BadPattern(line, exc.reason) from None
    text = f"{local}@{domain}"
    return _regex_pattern(".*".join(re2set.escape(part) for part in text.split("*")), line)


def translate_import_line(line: str) -> BanPattern | None:
    """One `bans import` line as a pattern; None for blank and `#` comment lines.

    Formats (SPEC section 9): a section 6 pattern; a Sympa `blocklist.txt` line, where
    `*@domain` is a domain ban and other `*` wildcards make a full-match regex; a
    Mailman 3 ban `^regex` (matched from the start, case-insensitively), which becomes
    `re:(?i:regex).*`. Raises BadPattern; the caller names the line number.
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    if text.startswith("^"):
        regex = text[1:]
        # Checked alone first, so that a stray `)` cannot close the (?i: group early.
        _regex_pattern(regex, text)
        return _regex_pattern(f"(?i:{regex}).*", text)
    if text[:3].lower() == "re:" or "*" not in text or _SECTION6_WILDCARD.fullmatch(text):
        return parse_pattern(text)
    return _sympa_wildcard(text)
