"""Address parsing and the one normalisation that bans, routing and participants share."""

from __future__ import annotations

import re
from email.policy import default as _default_policy
from encodings import idna

from rules.errors import GatewayError

DELIMITER = "+"

# BATV (draft-levine-smtp-batv-01) prefixes the local part with a per-message tag:
# `prvs=TAG=user`; Barracuda writes `btv1==TAG==user`. Both vary per message, so
# a ban must see through them.
_BATV = re.compile(r"(?:prvs|msprvs1)=[^=@]+=(?P<user>.+)|btv1==[^=@]+==(?P<btv>.+)", re.IGNORECASE)
# IDNA 2003 (RFC 3490 section 3.1) accepts these as label separators too.
_DOTS = re.compile("[.\u3002\uff0e\uff61]")
# Tolerant on purpose: an address that fails here escapes exact and domain bans.
_ASCII_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
# RFC 5322 section 3.2.3 specials, space and controls: only a quoted local part holds them.
_UNSAFE = re.compile(r'[\x00-\x20\x7f<>()\[\]:;@\\,"]')
_FOLD = re.compile(r"\r?\n(?=[ \t])")


class AddressError(GatewayError):
    """Something that is not an address local@domain."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"not an address local@domain: {address!r} ({reason})")
        self.address = address
        self.reason = reason


def _unwrap(address: str) -> str:
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    return text


def _split_raw(address: str) -> tuple[str, str]:
    text = _unwrap(address)
    local, at, domain = text.rpartition("@")
    if not at:
        raise AddressError(address, "no @")
    if not local:
        raise AddressError(address, "empty local part")
    if not domain:
        raise AddressError(address, "empty domain")
    return local, domain


def normalise_domain(domain: str) -> str:
    """Lower case, IDNA A-labels, no trailing dot; a `[literal]` is only lower-cased."""
    text = domain.strip().lower()
    if text.startswith("[") and text.endswith("]") and len(text) > 2:
        return text
    text = text.removesuffix(".")
    labels: list[str] = []
    for label in _DOTS.split(text):
        try:
            ascii_label = idna.ToASCII(label).decode("ascii").lower()
        except UnicodeError as exc:
            raise AddressError(domain, f"bad domain label {label!r}: {exc}") from None
        if not _ASCII_LABEL.fullmatch(ascii_label):
            raise AddressError(domain, f"bad domain label {label!r}")
        labels.append(ascii_label)
    return ".".join(labels)


def _normalise_local(local: str, address: str) -> str:
    text = local.lower()
    if len(text) >= 2 and text.startswith('"') and text.endswith('"'):
        return text
    if _UNSAFE.search(text):
        raise AddressError(address, "space, control or special character in the local part")
    # Repeated until none is left, so that stacking tags cannot dodge a ban and
    # normalising twice gives the same address.
    while (batv := _BATV.fullmatch(text)) is not None:
        text = batv.group("user") or batv.group("btv")
    base, plus, _tag = text.partition(DELIMITER)
    # A local part that starts with the delimiter has no base to keep (Postfix does the same).
    return base if plus and base else text


def normalise(address: str) -> str:
    """`<Prvs=1234=User+x@Bücher.Example>` -> `user@xn--bcher-kva.example` (SPEC section 6)."""
    local, domain = _split_raw(address)
    try:
        ascii_domain = normalise_domain(domain)
    except AddressError as exc:
        raise AddressError(address, exc.reason) from None
    return f"{_normalise_local(local, address)}@{ascii_domain}"


def normalise_list(address: str) -> str:
    """A list address as configuration, routing, bans and held posts all compare it:
    `Dev@Bücher.Example` -> `dev@xn--bcher-kva.example`. Unlike `normalise`, a `+tag`
    stays: a list's name is the whole local part."""
    local, domain = _split_raw(address)
    try:
        return f"{local.lower()}@{normalise_domain(domain)}"
    except AddressError as exc:
        raise AddressError(address, exc.reason) from None


def split(address: str) -> tuple[str, str]:
    """The normalised local part and domain."""
    local, _at, domain = normalise(address).rpartition("@")
    return local, domain


def domain_of(address: str) -> str:
    """The normalised domain."""
    return split(address)[1]


def parse_header_addresses(value: str) -> list[tuple[str, str]]:
    """(display name, addr-spec) of every address in an address header; [] when it is garbage.

    The addr-specs are as written (not normalised); an empty or null (`<>`) one is left out.
    """
    unfolded = _FOLD.sub("", value).replace("\r", " ").replace("\n", " ")
    try:
        header = _default_policy.header_factory("From", unfolded)
        addresses = header.addresses
    # The stdlib header parser raises ValueError (e.g. CR or LF left in an address part)
    # and has raised IndexError on hostile input; a header is data, never a crash.
    except Exception:
        return []
    return [
        (address.display_name, address.addr_spec)
        for address in addresses
        if address.addr_spec not in ("", "<>")
    ]


def subaddress(address: str, conduct_address: str) -> str | None:
    """`conduct+42@example.org` -> `42` for that conduct address; None for anything else.

    An empty detail (`conduct+@example.org`) gives "", which routes like the bare address.
    """
    try:
        local, domain = _split_raw(address)
        base_local, base_domain = _split_raw(conduct_address)
        if normalise_domain(domain) != normalise_domain(base_domain):
            return None
    except AddressError:
        return None
    base, plus, detail = local.lower().partition(DELIMITER)
    if not plus or base != base_local.lower():
        return None
    return detail


def is_conduct(address: str, conduct_address: str) -> bool:
    """The conduct address itself or any of its subaddresses."""
    if subaddress(address, conduct_address) is not None:
        return True
    try:
        local, domain = _split_raw(address)
        base_local, base_domain = _split_raw(conduct_address)
        return local.lower() == base_local.lower() and normalise_domain(domain) == normalise_domain(
            base_domain
        )
    except AddressError:
        return False
