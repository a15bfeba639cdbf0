"""Test-only DKIM keys, signing and an in-memory key DNS, so DKIM tests need no network."""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass(frozen=True)
class SigningKey:
    private_pem: bytes  # PKCS#1 PEM, the form dkimpy signs with
    txt: bytes  # the DNS TXT record publishing the public half


@functools.cache
def make_key(name: str = "default") -> SigningKey:
    """An RSA-2048 key, one per name for the whole run: generating keys is slow."""
    del name  # only the cache key: different names give different keys
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    spki = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return SigningKey(pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(spki))


def sign_for_tests(
    raw: bytes, domain: str, selector: str, private_key_pem: bytes, *, length: bool = False
) -> bytes:
    """`raw` with a DKIM-Signature by `domain` on top; `length` adds l= (the body's length)."""
    header: bytes = dkim.sign(
        raw,
        selector.encode("ascii"),
        domain.encode("ascii"),
        private_key_pem,
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
        length=length,
    )
    return header + raw


def key_dns(records: Mapping[str, bytes]) -> Callable[[bytes], bytes | None]:
    """A DNS function answering TXT for names like `sel._domainkey.example.org`."""
    wanted = {name.lower().rstrip("."): txt for name, txt in records.items()}

    def lookup(name: bytes) -> bytes | None:
        return wanted.get(name.decode("ascii").lower().rstrip("."))

    return lookup
