"""Whether a message has a DKIM signature that counts for commands (SPEC section 5), via dkimpy."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dkim
import dkim.dnsplug
import dkim.util
from dkim.canonicalization import CanonicalizationPolicy
from publicsuffixlist import PublicSuffixList

from rules.addresses import normalise_domain
from rules.alignment import aligned_relaxed

# Takes the key's DNS name (`selector._domainkey.domain.`, as bytes, fully qualified)
# and returns its TXT record, or None when there is none.
DnsLookup = Callable[[bytes], bytes | None]

# Signatures verified (each a DNS lookup) per message: a hostile message may carry hundreds.
MAX_VERIFIED = 8

# Failure reasons, most telling first: when nothing passes, the result reports the
# first of these that any signature met (mostly: the furthest a signature got).
_FAILURES = (
    "too-many-signatures",  # past MAX_VERIFIED, left unchecked: one of them might have passed
    "body-length-limited",  # verified and aligned, but its l= leaves part of the body unsigned
    "bad-signature",  # aligned; body hash or signature does not verify
    "bad-key",  # aligned; the key record is unusable or too small
    "dns-error",  # aligned; no key record, or the lookup failed
    "not-aligned",  # d= is not relaxed-aligned with the From domain (not verified at all)
    "malformed-signature",  # unparsable, lacks a tag, or fails dkimpy's tag checks
)
# Also reported: "pass", "no-signature", and "malformed-message" (dkimpy cannot split the headers).

# dkimpy logs exception texts, which quote header fields; keep them out of the gateway's log.
_SILENT = logging.Logger("dkimpy-silenced", level=logging.CRITICAL + 1)
_SILENT.addHandler(logging.NullHandler())
_SILENT.propagate = False


@dataclass(frozen=True)
class DkimResult:
    passed: bool
    domain: str | None  # d= of the passing aligned signature, in A-labels
    reason: str
    signatures: int


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    # Loading the list takes a moment: once per process, on first use.
    return PublicSuffixList()


def _registrable(domain: str) -> str | None:
    found: str | None = _public_suffixes().privatesuffix(domain)
    return found


class _KeyLookup:
    """Wraps the DNS function dkimpy calls, remembering why no usable key came back."""

    def __init__(self, lookup: DnsLookup | None) -> None:
        self._lookup = lookup
        self.failure: str | None = None

    def __call__(self, name: bytes, timeout: float = 5) -> bytes | None:
        try:
            if self._lookup is None:
                record: bytes | None = dkim.dnsplug.get_txt(name, timeout=timeout)
            else:
                record = self._lookup(name)
        except Exception:  # timeouts, SERVFAIL, a resolver without configuration
            self.failure = "dns-error"
            return None
        if not record:
            self.failure = "dns-error"
            return None
        try:
            dkim.evaluate_pk(name, record)
        except Exception:  # dkimpy turns this into a bare False; keep the reason
            self.failure = "bad-key"
        return record


def _tags(header_value: bytes) -> dict[bytes, bytes]:
    """The signature's tags, checked before any DNS lookup; raises on a malformed signature."""
    tags: dict[bytes, bytes] = dkim.util.parse_tag_value(header_value)
    # Bad base64, unknown a=, an i= outside d=, a past x=, a future t=.
    dkim.validate_signature_fields(tags)
    CanonicalizationPolicy.from_c_value(tags.get(b"c", b"simple/simple"))
    # dkimpy accepts an empty l= here and then fails on int(b"").
    if b"l" in tags and not tags[b"l"].isdigit():
        raise ValueError("l= is not a number")
    return tags


def _body_length_limited(verifier: Any, tags: dict[bytes, bytes]) -> bool:
    """True when l= is shorter than the body canonicalised by the signature's own c=.

    RFC 6376 section 8.2: content past l= is unsigned, so anyone could have appended it.
    An l= equal to the canonicalised body length covers the whole body and counts.
    """
    if b"l" not in tags:
        return False
    policy = CanonicalizationPolicy.from_c_value(tags.get(b"c", b"simple/simple"))
    body: bytes = policy.canonicalize_body(verifier.body)
    return int(tags[b"l"]) < len(body)


def _verify(verifier: Any, idx: int, tags: dict[bytes, bytes], lookup: DnsLookup | None) -> str:
    key_lookup = _KeyLookup(lookup)
    try:
        verified = verifier.verify(idx=idx, dnsfunc=key_lookup)
    except dkim.KeyFormatError:  # key too small, digest too large for the modulus
        return "bad-key"
    except dkim.DKIMException:  # body hash mismatch
        return "bad-signature"
    except Exception:  # dkimpy trips on inputs it did not expect
        return "malformed-signature"
    if not verified:
        return key_lookup.failure or "bad-signature"
    try:
        limited = _body_length_limited(verifier, tags)
    except Exception:
        return "malformed-signature"
    return "body-length-limited" if limited else "pass"


def _signature_domain(tags: dict[bytes, bytes]) -> str:
    return normalise_domain(tags[b"d"].decode("utf-8"))


def verify_aligned(raw: bytes, from_domain: str, *, dnsfunc: DnsLookup | None = None) -> DkimResult:
    """Pass when one DKIM signature verifies, is relaxed-aligned with `from_domain`, and
    signs the whole body. Never raises: bad mail gives a failed result.

    Without `dnsfunc`, keys come from DNS through dkimpy's resolver (dnspython).
    """
    try:
        verifier = dkim.DKIM(raw, logger=_SILENT)
    except Exception:  # dkimpy's header parser rejects the message
        return DkimResult(False, None, "malformed-message", 0)
    values = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    if not values:
        return DkimResult(False, None, "no-signature", 0)
    reasons: list[str] = []
    checked = 0
    for idx, value in enumerate(values):
        try:
            tags = _tags(value)
            domain = _signature_domain(tags)
        except Exception:
            reasons.append("malformed-signature")
            continue
        if not aligned_relaxed(domain, from_domain, _registrable):
            reasons.append("not-aligned")
            continue
        if checked >= MAX_VERIFIED:
            reasons.append("too-many-signatures")
            continue
        checked += 1
        reason = _verify(verifier, idx, tags, dnsfunc)
        if reason == "pass":
            return DkimResult(True, domain, "pass", len(values))
        reasons.append(reason)
    return DkimResult(False, None, min(reasons, key=_FAILURES.index), len(values))
