"""What an address column can hold: an address, or None for a value that cannot be one.

PostgreSQL refuses a value longer than its varchar(320), and one refused row fails its
whole transaction: SMTP then answers 451, and IMAP, `ingest` and the relay retry, for
ever. SQLite takes anything, so without this the two backends would disagree.
"""

from __future__ import annotations

ADDRESS_LENGTH = 320  # every address column of storage.models


def usable_address(address: str | None) -> str | None:
    """`address`, or None when it cannot be an address at all: longer than the column
    (no real one is: RFC 5321 section 4.5.3.1.3 caps a path at 256 octets), or holding
    a control or other unprintable character (a NUL, a line break, an undecodable byte
    kept as a lone surrogate, which neither driver can encode)."""
    if address is None or len(address) > ADDRESS_LENGTH or not address.isprintable():
        return None
    return address
