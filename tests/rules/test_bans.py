"""Ban patterns, the ban index, protected addresses and `bans import` lines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rules import re2set
from rules.bans import (
    BadPattern,
    Ban,
    BanIndex,
    BanPattern,
    PatternKind,
    parse_pattern,
    protected_hits,
    translate_import_line,
)
from rules.errors import GatewayError

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LIST = "dev@lists.example.org"
OTHER_LIST = "announce@lists.example.org"
PROTECTED = ["conduct@example.org", "alice@example.org", "director@example.net"]
LOCAL_DOMAINS = ["example.org", "lists.example.org"]


def ban(
    pattern: str,
    ban_id: int = 1,
    list_address: str | None = None,
    expires_at: datetime | None = None,
) -> Ban:
    return Ban(
        id=ban_id,
        pattern=parse_pattern(pattern),
        list=list_address,
        reason="test",
        created_by="alice@example.org",
        created_at=NOW - timedelta(days=1),
        expires_at=expires_at,
    )


def banned(pattern: str, address: str) -> bool:
    return BanIndex([ban(pattern)]).match(address, LIST, NOW) is not None


@pytest.mark.parametrize(
    ("text", "kind", "canonical"),
    [
        ("User+x@Example.COM", PatternKind.EXACT, "user@example.com"),
        ("*@Example.COM", PatternKind.DOMAIN, "*@example.com"),
        ("*@*.Example.com", PatternKind.SUBDOMAINS, "*@*.example.com"),
        ("*@bücher.example", PatternKind.DOMAIN, "*@xn--bcher-kva.example"),
        (r"re:spam\d+@example\.com", PatternKind.REGEX, r"re:spam\d+@example\.com"),
    ],
)
def test_parse_pattern_recognises_each_kind_and_prints_it_canonically(
    text: str, kind: PatternKind, canonical: str
) -> None:
    pattern = parse_pattern(text)
    assert pattern.kind is kind
    assert str(pattern) == canonical
    assert pattern.original == text
    assert parse_pattern(str(pattern)) == pattern


def test_patterns_that_catch_the_same_addresses_are_equal_for_dedup() -> None:
    assert parse_pattern("User+x@Example.COM") == parse_pattern("user@example.com")
    assert (
        len({parse_pattern("prvs=12ab=user@example.com"), parse_pattern("user@example.com")}) == 1
    )


@pytest.mark.parametrize(
    "text", ["", "  ", "re:", "spam*@example.com", "*@", "*@*.", "*@exa*mple.com", "not-an-address"]
)
def test_parse_pattern_refuses_malformed_patterns(text: str) -> None:
    with pytest.raises(BadPattern):
        parse_pattern(text)


@pytest.mark.parametrize("regex", [r"(a)\1", "(?=x)", "(?<=a)b", "[unclosed"])
def test_parse_pattern_refuses_what_re2_refuses_with_its_reason(regex: str) -> None:
    with pytest.raises(BadPattern) as info:
        parse_pattern(f"re:{regex}")
    assert isinstance(info.value, GatewayError)
    assert "RE2 refuses" in str(info.value)


def test_re2set_reports_re2s_reason() -> None:
    with pytest.raises(re2set.BadRegex) as info:
        re2set.check_pattern(r"(a)\1")
    assert "invalid escape sequence" in info.value.reason


def test_full_match_set_refuses_a_bad_pattern_and_misuse() -> None:
    regexes = re2set.FullMatchSet()
    assert regexes.add("a.*") == 0
    with pytest.raises(re2set.BadRegex):
        regexes.add("(?=x)")
    with pytest.raises(re2set.RegexSetError):
        regexes.match("abc")
    regexes.compile()
    assert regexes.match("abc") == [0]
    assert regexes.match("xabc") == []
    with pytest.raises(re2set.RegexSetError):
        regexes.add("b")


def test_exact_ban_catches_subaddress_and_case_variants() -> None:
    assert banned("user@example.com", "User+x@Example.COM")
    assert banned("User+x@Example.COM", "user@example.com")
    assert not banned("user@example.com", "user2@example.com")


def test_exact_ban_sees_through_batv() -> None:
    assert banned("user@example.com", "prvs=1234567890=user@example.com")
    assert banned("user@example.com", "btv1==abcdef==User+list@example.com")


def test_unicode_and_a_label_domains_are_the_same_ban() -> None:
    assert banned("user@bücher.example", "user@xn--bcher-kva.example")
    assert banned("user@xn--bcher-kva.example", "User@Bücher.Example")


def test_domain_ban_catches_that_domain_only() -> None:
    assert banned("*@example.com", "anyone@EXAMPLE.com")
    assert not banned("*@example.com", "anyone@mail.example.com")


def test_subdomains_ban_catches_subdomains_at_any_depth_but_not_the_domain() -> None:
    assert banned("*@*.example.com", "a@mail.example.com")
    assert banned("*@*.example.com", "a@x.y.example.com")
    assert not banned("*@*.example.com", "a@example.com")
    assert not banned("*@*.example.com", "a@badexample.com")


def test_regex_ban_full_matches_the_normalised_address() -> None:
    assert banned(r"re:spam\d+@example\.com", "Spam42+x@Example.com")
    assert not banned(r"re:spam\d+@example\.com", "xspam42@example.com")
    assert not banned("re:spam", "spam@example.com")


def test_ban_scoped_to_a_list_applies_to_that_list_only() -> None:
    index = BanIndex([ban("user@example.com", list_address=LIST)])
    assert index.match("user@example.com", LIST.upper(), NOW) is not None
    assert index.match("user@example.com", OTHER_LIST, NOW) is None


def test_ban_on_all_lists_applies_to_every_list() -> None:
    index = BanIndex([ban("*@example.com")])
    assert index.match("user@example.com", LIST, NOW) is not None
    assert index.match("user@example.com", OTHER_LIST, NOW) is not None


def test_timed_ban_stops_at_its_exact_end() -> None:
    end = NOW + timedelta(hours=1)
    index = BanIndex([ban("user@example.com", expires_at=end)])
    assert index.match("user@example.com", LIST, end - timedelta(microseconds=1)) is not None
    assert index.match("user@example.com", LIST, end) is None


def test_match_prefers_longest_lasting_then_list_specific_then_specific_then_oldest() -> None:
    later = NOW + timedelta(days=30)
    sooner = NOW + timedelta(days=1)
    timed_long = ban("user@example.com", 1, LIST, later)
    timed_short = ban("*@example.com", 2, LIST, sooner)
    permanent_all = ban(r"re:.*@example\.com", 3)
    permanent_list = ban("*@example.com", 4, LIST)
    permanent_exact = ban("user@example.com", 5, LIST)
    permanent_exact_newer = ban("user+x@example.com", 6, LIST)
    index = BanIndex(
        [
            timed_short,
            timed_long,
            permanent_all,
            permanent_list,
            permanent_exact_newer,
            permanent_exact,
        ]
    )
    assert index.match_all("user@example.com", LIST, NOW) == [
        permanent_exact,
        permanent_exact_newer,
        permanent_list,
        permanent_all,
        timed_long,
        timed_short,
    ]
    assert index.match("user@example.com", LIST, NOW) == permanent_exact


def test_address_that_does_not_normalise_meets_regex_bans_only_and_never_raises() -> None:
    index = BanIndex([ban("*@example.com", 1), ban(r"re:bad address@example\.com", 2)])
    hits = index.match_all("Bad Address@example.com", LIST, NOW)
    assert [hit.id for hit in hits] == [2]
    assert index.match("@@@", LIST, NOW) is None


def test_null_sender_matches_nothing() -> None:
    index = BanIndex([ban("re:.*")])
    assert index.match("<>", LIST, NOW) is None
    assert index.match("", LIST, NOW) is None


def test_large_index_builds_and_matches_each_kind() -> None:
    bans = [ban(f"user{n}@host{n % 997}.example", n) for n in range(100_000)]
    bans += [ban(f"*@domain{n}.example", 100_000 + n) for n in range(1_000)]
    bans += [ban(rf"re:rx{n}-[a-z]+@regex\.example", 101_000 + n) for n in range(200)]
    index = BanIndex(bans)
    assert len(index) == 101_200

    def decided(address: str) -> int | None:
        hit = index.match(address, LIST, NOW)
        return None if hit is None else hit.id

    assert decided(f"User77777+tag@Host{77777 % 997}.example") == 77777
    assert decided("someone@domain999.example") == 100_999
    assert decided("rx199-abc@regex.example") == 101_199
    assert decided("rx200-abc@regex.example") is None
    assert decided("user1@host2.example") is None
    assert decided("nobody@example.com") is None


def test_protected_hits_refuses_a_ban_on_a_staff_member() -> None:
    hits = protected_hits(parse_pattern("Alice+x@example.org"), PROTECTED, LOCAL_DOMAINS)
    assert hits == ["alice@example.org would catch the protected address alice@example.org"]


def test_protected_hits_refuses_a_ban_on_the_conduct_address() -> None:
    assert protected_hits(parse_pattern("conduct+42@example.org"), PROTECTED, LOCAL_DOMAINS)
    assert protected_hits(parse_pattern("re:conduct@.*"), PROTECTED, LOCAL_DOMAINS)


def test_protected_hits_refuses_a_whole_local_domain() -> None:
    hits = protected_hits(parse_pattern("*@example.org"), PROTECTED, LOCAL_DOMAINS)
    assert "*@example.org would catch every address at the local domain example.org" in hits
    assert protected_hits(parse_pattern("*@*.example.org"), [], LOCAL_DOMAINS)


def test_protected_hits_tries_regexes_on_protected_addresses_and_local_domains() -> None:
    hits = protected_hits(parse_pattern(r"re:.*@example\.org"), PROTECTED, LOCAL_DOMAINS)
    assert len(hits) == 3  # conduct, alice, and the domain example.org


def test_protected_hits_allows_an_ordinary_ban() -> None:
    for text in ["troll@example.com", "*@spam.example", r"re:spam\d+@example\.org"]:
        assert protected_hits(parse_pattern(text), PROTECTED, LOCAL_DOMAINS) == []


@pytest.mark.parametrize("line", ["", "   ", "# a comment", "  # indented comment"])
def test_import_skips_blank_and_comment_lines(line: str) -> None:
    assert translate_import_line(line) is None


@pytest.mark.parametrize(
    ("line", "canonical"),
    [
        ("User@Example.com", "user@example.com"),
        ("*@*.example.com", "*@*.example.com"),
        (r"re:spam\d+@example\.com", r"re:spam\d+@example\.com"),
        ("*@Spammer.example", "*@spammer.example"),
        ("spam*@*", r"re:spam.*@.*"),
        ("*.bot@*.example.com", r"re:.*\.bot@.*\.example\.com"),
        ("^spam.*", "re:(?i:spam.*).*"),
    ],
)
def test_import_translates_each_format(line: str, canonical: str) -> None:
    pattern = translate_import_line(f"  {line}  ")
    assert pattern is not None
    assert str(pattern) == canonical


def test_import_sympa_wildcard_catches_what_sympa_would() -> None:
    pattern = translate_import_line("spam*@*.example.com")
    assert pattern is not None
    assert pattern.matches("Spammer@mail.example.com")
    assert not pattern.matches("spammer@example.com")


def test_import_mailman_regex_matches_from_the_start_case_insensitively() -> None:
    pattern = translate_import_line("^spam.*")
    assert pattern is not None
    index = BanIndex([Ban(1, pattern, None, None, "import", NOW)])
    assert index.match("spammer@x.org", LIST, NOW) is not None
    assert index.match("SPAM@x.org", LIST, NOW) is not None
    assert index.match("nospam@x.org", LIST, NOW) is None


def test_import_mailman_regex_cannot_escape_its_group() -> None:
    with pytest.raises(BadPattern):
        translate_import_line("^a)|(.*")


@pytest.mark.parametrize("line", [r"^(a)\1", "^(?=x)", r"re:(?!a)", "*@exa*mple.com@", "a b@c"])
def test_import_refuses_a_bad_line_with_the_reason(line: str) -> None:
    with pytest.raises(BadPattern) as info:
        translate_import_line(line)
    assert info.value.reason


def test_ban_pattern_matches_normalises_the_address() -> None:
    assert BanPattern(PatternKind.EXACT, "user@example.com").matches("<User+x@Example.com>")
