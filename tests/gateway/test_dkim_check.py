"""DKIM for commands: a signature counts if it verifies, aligns with From and signs all the body."""

from __future__ import annotations

import dkim
import pytest

from gateway.dkim_check import MAX_VERIFIED, DkimResult, verify_aligned
from tests.dkim_keys import key_dns, make_key, sign_for_tests

KEY = make_key()
OTHER_KEY = make_key("other")


def message(sender: str = "alice@example.org", body: bytes = b"#close\r\n") -> bytes:
    return (
        f"From: Alice <{sender}>\r\n"
        "To: conduct+staff@example.org\r\n"
        "Subject: re: case 12\r\n"
        "Date: Mon, 01 Jul 2024 10:00:00 +0000\r\n"
        "Message-ID: <cmd-1@example.org>\r\n"
        "\r\n"
    ).encode() + body


def signed(raw: bytes, domain: str, *, length: bool = False) -> bytes:
    return sign_for_tests(raw, domain, "sel", KEY.private_pem, length=length)


def dns_for(*domains: str) -> dict[str, bytes]:
    return {f"sel._domainkey.{domain}": KEY.txt for domain in domains}


def check(raw: bytes, from_domain: str, *domains: str) -> DkimResult:
    return verify_aligned(raw, from_domain, dnsfunc=key_dns(dns_for(*domains)))


def test_signature_by_the_from_domain_passes() -> None:
    result = check(signed(message(), "example.org"), "example.org", "example.org")
    assert result == DkimResult(passed=True, domain="example.org", reason="pass", signatures=1)


def test_signature_by_a_subdomain_of_the_from_organization_passes() -> None:
    result = check(signed(message(), "mail.example.org"), "example.org", "mail.example.org")
    assert (result.passed, result.domain) == (True, "mail.example.org")


def test_parent_domain_signature_aligns_with_a_subdomain_sender() -> None:
    raw = signed(message("bob@lists.example.org"), "example.org")
    assert check(raw, "lists.example.org", "example.org").passed


def test_from_domain_is_compared_case_insensitively_and_without_trailing_dot() -> None:
    assert check(signed(message(), "example.org"), "EXAMPLE.Org.", "example.org").passed


def test_verifying_signature_by_an_unrelated_domain_is_not_aligned() -> None:
    raw = signed(message(), "example.net")
    records = key_dns(dns_for("example.net"))
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: records(name))
    result = check(raw, "example.org", "example.net")
    assert result == DkimResult(False, None, "not-aligned", 1)


def test_unaligned_signatures_cause_no_dns_lookup() -> None:
    asked: list[bytes] = []

    def lookup(name: bytes) -> bytes | None:
        asked.append(name)
        return KEY.txt

    verify_aligned(signed(message(), "example.net"), "example.org", dnsfunc=lookup)
    assert asked == []


def test_tampered_body_fails() -> None:
    raw = signed(message(), "example.org").replace(b"#close", b"#unban")
    result = check(raw, "example.org", "example.org")
    assert (result.passed, result.reason) == (False, "bad-signature")


def test_tampered_signed_header_fails() -> None:
    raw = signed(message(), "example.org").replace(b"case 12", b"case 13")
    assert check(raw, "example.org", "example.org").reason == "bad-signature"


def test_signature_under_another_key_fails() -> None:
    raw = sign_for_tests(message(), "example.org", "sel", OTHER_KEY.private_pem)
    assert check(raw, "example.org", "example.org").reason == "bad-signature"


def test_missing_signature_fails() -> None:
    assert check(message(), "example.org", "example.org") == DkimResult(
        False, None, "no-signature", 0
    )


def bad_signature_header() -> bytes:
    """An aligned DKIM-Signature header made over another body: it never verifies here."""
    other = signed(message(body=b"#ban mallory@example.net\r\n"), "example.org")
    return other[: other.index(b"From: ")]


def bad_then_good(raw: bytes) -> bytes:
    return bad_signature_header() + signed(raw, "example.org")


def test_bad_first_signature_does_not_hide_a_good_second_one() -> None:
    raw = bad_then_good(message())
    result = check(raw, "example.org", "example.org")
    assert result == DkimResult(True, "example.org", "pass", 2)


def test_unaligned_first_signature_does_not_hide_an_aligned_second_one() -> None:
    esp = sign_for_tests(
        signed(message(), "example.org"), "esp.example.net", "sel", KEY.private_pem
    )
    result = check(esp, "example.org", "example.org", "esp.example.net")
    assert result == DkimResult(True, "example.org", "pass", 2)


def test_failure_reports_the_signature_that_got_furthest() -> None:
    raw = signed(message(), "example.net")  # verifies, unaligned
    raw = signed(raw, "example.org").replace(b"#close", b"#unban")  # aligned, body changed
    assert check(raw, "example.org", "example.org", "example.net").reason == "bad-signature"


def test_length_limited_signature_with_appended_text_does_not_count() -> None:
    raw = signed(message(), "example.org", length=True) + b"#unban mallory@example.net\r\n"
    records = key_dns(dns_for("example.org"))
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: records(name))  # dkimpy alone: pass
    assert check(raw, "example.org", "example.org") == DkimResult(
        False, None, "body-length-limited", 1
    )


def test_length_limited_signature_covering_the_whole_body_counts() -> None:
    raw = signed(message(), "example.org", length=True)
    assert b" l=" in raw or b";l=" in raw or b"\tl=" in raw
    assert check(raw, "example.org", "example.org").passed


def test_length_is_compared_with_the_canonicalised_body() -> None:
    # Simple body canonicalisation (RFC 6376 section 3.4.3) ignores trailing empty lines.
    raw = signed(message(), "example.org", length=True) + b"\r\n\r\n"
    assert check(raw, "example.org", "example.org").passed


def test_length_limited_bad_signature_reports_bad_signature() -> None:
    raw = signed(message(), "example.org", length=True).replace(b"#close", b"#clone")
    assert check(raw, "example.org", "example.org").reason == "bad-signature"


def test_key_missing_from_dns_is_a_dns_error() -> None:
    result = check(signed(message(), "example.org"), "example.org")
    assert (result.passed, result.reason) == (False, "dns-error")


def test_failing_dns_lookup_is_a_dns_error_not_an_exception() -> None:
    def broken(name: bytes) -> bytes | None:
        raise TimeoutError(name)

    result = verify_aligned(signed(message(), "example.org"), "example.org", dnsfunc=broken)
    assert (result.passed, result.reason) == (False, "dns-error")


def test_unusable_key_record_is_a_bad_key() -> None:
    lookup = key_dns({"sel._domainkey.example.org": b"v=DKIM1; k=rsa; p=bm90IGEga2V5"})
    result = verify_aligned(signed(message(), "example.org"), "example.org", dnsfunc=lookup)
    assert (result.passed, result.reason) == (False, "bad-key")


def with_signature_header(value: bytes) -> bytes:
    return b"DKIM-Signature: " + value + b"\r\n" + message()


@pytest.mark.parametrize(
    "value",
    [
        b"garbage",
        b";;;==",
        b"v=1; a=rsa-sha256; d=example.org; s=sel; h=from; bh=!!!; b=%%%",
        b"v=1; a=rsa-sha256; s=sel; h=from; bh=AAAA; b=AAAA",  # no d=
        b"v=1; a=rsa-sha256; d=\xff\xfe.org; s=sel; h=from; bh=AAAA; b=AAAA",
        b"v=1; a=rsa-sha256; d=example.org; d=example.org; s=sel; h=from; bh=AAAA; b=AAAA",
        b"v=1; a=rsa-md5; d=example.org; s=sel; h=from; bh=AAAA; b=AAAA",
        b"v=1; a=rsa-sha256; d=example.org; s=sel; h=from; bh=AAAA; b=AAAA; l=",
        b"v=1; a=rsa-sha256; d=example.org; s=sel; h=from; bh=AAAA; b=AAAA; i=example.org",
        b"v=1; a=rsa-sha256; c=odd/odd; d=example.org; s=sel; h=from; bh=AAAA; b=AAAA",
        b"v=1; a=rsa-sha256; d=example.org; s=sel; h=from; bh=AAAA; b=AAAA; x=1",
        b"v=1; a=rsa-sha256; d=example.org; s=sel; h=from; bh=AAAA; b=AAAA; l=12x",
        b"",
    ],
)
def test_garbage_signature_header_fails_without_raising(value: bytes) -> None:
    result = check(with_signature_header(value), "example.org", "example.org")
    assert result == DkimResult(False, None, "malformed-signature", 1)


def test_malformed_signature_causes_no_dns_lookup() -> None:
    asked: list[bytes] = []

    def lookup(name: bytes) -> bytes | None:
        asked.append(name)
        return KEY.txt

    value = b"v=1; a=rsa-sha256; d=example.org; s=sel; h=from; bh=AAAA; b=AAAA; l=x"
    verify_aligned(with_signature_header(value), "example.org", dnsfunc=lookup)
    assert asked == []


@pytest.mark.parametrize(
    "raw",
    [
        b" folded continuation first\r\nFrom: a@example.org\r\n\r\nbody",
        b"no colon in this header line\r\n\r\nbody",
        b"\x00\x01\x02: \xff\r\n\r\n",
    ],
)
def test_unparsable_message_fails_without_raising(raw: bytes) -> None:
    result = verify_aligned(raw, "example.org", dnsfunc=key_dns({}))
    assert result == DkimResult(False, None, "malformed-message", 0)


def test_empty_message_has_no_signature() -> None:
    assert verify_aligned(b"", "example.org", dnsfunc=key_dns({})).reason == "no-signature"


def test_large_body_is_verified() -> None:
    raw = signed(message(body=(b"y" * 998 + b"\r\n") * 20_000), "example.org")
    assert check(raw, "example.org", "example.org").passed


def test_aligned_signatures_past_the_limit_are_left_unchecked() -> None:
    raw = bad_signature_header() * MAX_VERIFIED + signed(message(), "example.org")
    result = check(raw, "example.org", "example.org")
    assert result == DkimResult(False, None, "too-many-signatures", MAX_VERIFIED + 1)


def test_signatures_within_the_limit_are_all_checked() -> None:
    raw = bad_signature_header() * (MAX_VERIFIED - 1) + signed(message(), "example.org")
    assert check(raw, "example.org", "example.org").passed


@pytest.mark.parametrize(
    ("signing", "sender", "passed"),
    [
        ("mail.example.co.uk", "example.co.uk", True),
        ("example.co.uk", "lists.example.co.uk", True),
        ("a.co.uk", "b.co.uk", False),
        ("co.uk", "example.co.uk", False),
    ],
)
def test_alignment_uses_the_public_suffix_list(signing: str, sender: str, passed: bool) -> None:
    result = check(signed(message(f"carol@{sender}"), signing), sender, signing)
    assert result.passed is passed
    assert result.reason == ("pass" if passed else "not-aligned")
