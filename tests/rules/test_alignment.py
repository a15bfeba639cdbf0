"""DMARC relaxed alignment over a small, fixed public suffix list."""

from __future__ import annotations

import pytest

from rules.alignment import aligned_relaxed, organizational_domain

SUFFIXES = {"org", "example", "uk", "co.uk", "xn--p1ai"}


def registrable(domain: str) -> str | None:
    """Public suffix plus one label; the longest suffix wins, as in the real list."""
    labels = domain.split(".")
    for start in range(len(labels)):
        if ".".join(labels[start:]) in SUFFIXES:
            return ".".join(labels[start - 1 :]) if start > 0 else None
    return None


def test_organizational_domain_of_a_subdomain_is_the_registrable_domain() -> None:
    assert organizational_domain("lists.mail.example.org", registrable) == "example.org"


def test_organizational_domain_of_a_public_suffix_is_itself() -> None:
    assert organizational_domain("co.uk", registrable) == "co.uk"


def test_organizational_domain_hands_the_list_a_labels_and_lower_case() -> None:
    seen: list[str] = []

    def spy(domain: str) -> str | None:
        seen.append(domain)
        return "XN--BCHER-KVA.example"

    assert organizational_domain("Mail.Bücher.Example.", spy) == "xn--bcher-kva.example"
    assert seen == ["mail.xn--bcher-kva.example"]


@pytest.mark.parametrize(
    ("signing", "sender"),
    [
        ("example.org", "example.org"),
        ("mail.example.org", "example.org"),
        ("example.org", "lists.example.org"),
        ("a.example.org", "b.example.org"),
        ("EXAMPLE.org.", "Example.ORG"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("mail.xn--bcher-kva.example", "Bücher.example"),
        ("example.co.uk", "mail.example.co.uk"),
    ],
)
def test_same_organizational_domain_is_aligned(signing: str, sender: str) -> None:
    assert aligned_relaxed(signing, sender, registrable)


@pytest.mark.parametrize(
    ("signing", "sender"),
    [
        ("example.net", "example.org"),
        ("a.co.uk", "b.co.uk"),
        ("co.uk", "example.co.uk"),
        ("example.org.evil.org", "example.org"),
        ("notexample.org", "example.org"),
        ("org", "example.org"),
    ],
)
def test_different_organizational_domains_are_not_aligned(signing: str, sender: str) -> None:
    assert not aligned_relaxed(signing, sender, registrable)


@pytest.mark.parametrize(
    ("signing", "sender"),
    [
        ("", "example.org"),
        ("example.org", ""),
        ("exa mple.org", "exa mple.org"),
        ("a..example.org", "example.org"),
        ("[192.0.2.1]", "[192.0.2.1]"),
    ],
)
def test_invalid_domains_never_align(signing: str, sender: str) -> None:
    assert not aligned_relaxed(signing, sender, registrable)


def test_a_public_suffix_aligns_only_with_itself() -> None:
    assert aligned_relaxed("co.uk", "co.uk", registrable)
