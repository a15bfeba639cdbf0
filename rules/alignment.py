"""DMARC relaxed alignment (RFC 7489 section 3.1.1); the public suffix list is passed in."""

from __future__ import annotations

from collections.abc import Callable

from rules.addresses import AddressError, normalise_domain

# Maps an A-label domain to its registrable domain (public suffix plus one label),
# or None when the domain is itself a public suffix or has no registrable part.
RegistrableDomain = Callable[[str], str | None]


def organizational_domain(domain: str, psl: RegistrableDomain) -> str:
    """The Organizational Domain (RFC 7489 section 3.2) of a domain, in lower-case A-labels.

    A domain the list gives no registrable part for (a public suffix such as
    `co.uk`) is its own organizational domain, so it aligns only with itself.
    Raises AddressError when the domain is not a valid domain name.
    """
    ascii_domain = normalise_domain(domain)
    registrable = psl(ascii_domain)
    if not registrable:
        return ascii_domain
    return normalise_domain(registrable)


def aligned_relaxed(signing_domain: str, from_domain: str, psl: RegistrableDomain) -> bool:
    """True when both domains share one Organizational Domain; an invalid domain never aligns."""
    try:
        signing_org = organizational_domain(signing_domain, psl)
        from_org = organizational_domain(from_domain, psl)
    except AddressError:
        return False
    # An address literal (`[192.0.2.1]`) has no organizational domain to share.
    if not signing_org or signing_org.startswith("["):
        return False
    return signing_org == from_org
