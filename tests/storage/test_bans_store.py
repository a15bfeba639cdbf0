"""The bans repository on each backend: add, import, lift, the change marker, what is in force."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from rules.bans import BanIndex, PatternKind, parse_pattern
from storage import audit, bans
from storage.db import Database
from storage.models import AuditEvent, BanRow

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
DEV = "dev@lists.example.org"


def add(
    db: Database,
    pattern: str,
    *,
    list_address: str | None = None,
    expires_at: datetime | None = None,
    case: int | None = None,
) -> int:
    with db.transaction() as session:
        ban = bans.add(
            session,
            pattern=parse_pattern(pattern),
            list_address=list_address,
            reason="spam",
            created_by="alice@example.org",
            now=NOW,
            expires_at=expires_at,
            case=case,
        )
        return ban.id


def actions(db: Database) -> list[str]:
    with db.transaction() as session:
        return list(session.execute(select(AuditEvent.action).order_by(AuditEvent.seq)).scalars())


def test_an_added_ban_is_stored_canonically_audited_and_bumps_the_marker(db: Database) -> None:
    with db.transaction() as session:
        assert bans.version(session) == 0
        ban = bans.add(
            session,
            pattern=parse_pattern("User+x@Example.COM"),
            list_address="Dev@Lists.Example.org",
            reason="harassment",
            created_by="alice@example.org",
            now=NOW,
            expires_at=NOW + timedelta(days=7),
            case=None,
            interim=True,
        )
    assert str(ban.pattern) == "user@example.com"
    assert ban.list == DEV
    assert ban.interim
    with db.transaction() as session:
        assert bans.version(session) == 1
        stored = session.execute(select(BanRow.pattern)).scalar_one()
        assert stored == "user@example.com"
        record = bans.get(session, ban.id)
        assert record is not None
        assert record.ban == ban
        assert record.ban.expires_at == NOW + timedelta(days=7)
    assert actions(db) == ["ban-added"]


def test_every_pattern_kind_reads_back_as_it_was_added(db: Database) -> None:
    for text in ("a@example.com", "*@example.net", "*@*.example.org", "re:.*@spam\\..*"):
        add(db, text)
    with db.transaction() as session:
        loaded = bans.load_active(session, NOW)
    assert [b.pattern.kind for b in loaded] == [
        PatternKind.EXACT,
        PatternKind.DOMAIN,
        PatternKind.SUBDOMAINS,
        PatternKind.REGEX,
    ]
    assert [b.pattern for b in loaded] == [
        parse_pattern(t) for t in ("a@example.com", "*@example.net", "*@*.example.org")
    ] + [parse_pattern("re:.*@spam\\..*")]
    index = BanIndex(loaded)
    assert index.match("x@deep.example.org", DEV, NOW) is not None
    assert index.match("bob@spam.example", DEV, NOW) is not None


def test_a_lifted_ban_is_no_longer_in_force_and_lifting_twice_gives_none(db: Database) -> None:
    ban_id = add(db, "a@example.com", case=None)
    with db.transaction() as session:
        lifted = bans.lift(session, ban_id, "bob@example.org", NOW + timedelta(hours=1))
        assert lifted is not None
        assert lifted.id == ban_id
    with db.transaction() as session:
        assert bans.lift(session, ban_id, "bob@example.org", NOW) is None
        assert bans.lift(session, 999, "bob@example.org", NOW) is None
        assert bans.load_active(session, NOW + timedelta(hours=2)) == []
        record = bans.get(session, ban_id)
        assert record is not None
        assert record.lifted_by == "bob@example.org"
        assert not record.active(NOW + timedelta(hours=2))
        assert bans.version(session) == 2
    assert actions(db) == ["ban-added", "ban-lifted"]


def test_an_expired_ban_is_listed_only_with_include_inactive(db: Database) -> None:
    expired = add(db, "old@example.com", expires_at=NOW + timedelta(hours=1))
    current = add(db, "new@example.com")
    later = NOW + timedelta(hours=1)  # a ban no longer applies at its exact end
    with db.transaction() as session:
        assert [r.ban.id for r in bans.list_bans(session, later)] == [current]
        every = bans.list_bans(session, later, include_inactive=True)
        assert [(r.ban.id, r.active(later)) for r in every] == [(expired, False), (current, True)]
        assert [b.id for b in bans.load_active(session, later)] == [current]
        assert [b.id for b in bans.load_active(session, NOW)] == [expired, current]


def test_find_active_matches_pattern_and_exact_scope(db: Database) -> None:
    everywhere = add(db, "a@example.com")
    on_dev = add(db, "a@example.com", list_address=DEV)
    pattern = parse_pattern("A+tag@Example.com")
    with db.transaction() as session:
        found = bans.find_active(session, pattern, None, NOW)
        assert found is not None
        assert found.id == everywhere
        found = bans.find_active(session, pattern, "DEV@lists.example.org", NOW)
        assert found is not None
        assert found.id == on_dev
        assert bans.find_active(session, pattern, "other@lists.example.org", NOW) is None
        assert bans.find_active(session, parse_pattern("b@example.com"), None, NOW) is None


def test_add_many_skips_patterns_in_force_with_the_same_scope(db: Database) -> None:
    add(db, "a@example.com")
    add(db, "b@example.com", list_address=DEV)
    patterns = [parse_pattern(t) for t in ("a@example.com", "b@example.com", "c@example.com")]
    patterns.append(parse_pattern("C@Example.com"))  # the same ban twice in one file
    with db.transaction() as session:
        added, present = bans.add_many(
            session,
            patterns=patterns,
            list_address=None,
            reason="import",
            created_by="cli",
            now=NOW,
        )
    assert (added, present) == (2, 2)
    with db.transaction() as session:
        scoped = {(str(r.ban.pattern), r.ban.list) for r in bans.list_bans(session, NOW)}
        assert scoped == {
            ("a@example.com", None),
            ("b@example.com", DEV),
            ("b@example.com", None),
            ("c@example.com", None),
        }
        assert bans.version(session) == 3
    assert actions(db) == ["ban-added", "ban-added", "bans-imported"]


def test_add_many_with_nothing_new_writes_no_audit_event(db: Database) -> None:
    add(db, "a@example.com")
    with db.transaction() as session:
        result = bans.add_many(
            session,
            patterns=[parse_pattern("a@example.com")],
            list_address=None,
            reason=None,
            created_by="cli",
            now=NOW,
        )
        assert result == (0, 1)
        assert bans.version(session) == 1
    assert actions(db) == ["ban-added"]


def test_add_many_imports_many_rows_with_one_audit_event(db: Database) -> None:
    patterns = [parse_pattern(f"user{i}@example.com") for i in range(12_000)]
    reported: list[int] = []
    with db.transaction() as session:
        added, present = bans.add_many(
            session,
            patterns=patterns,
            list_address=DEV,
            reason=None,
            created_by="cli",
            now=NOW,
            progress=reported.append,
        )
    assert (added, present) == (12_000, 0)
    assert sum(reported) == 12_000
    with db.transaction() as session:
        assert session.execute(select(func.count()).select_from(BanRow)).scalar_one() == 12_000
        assert len(bans.load_active(session, NOW)) == 12_000
        assert audit.verify_chain(session).problem is None
    assert actions(db) == ["bans-imported"]


def test_a_lifted_ban_can_be_imported_again(db: Database) -> None:
    ban_id = add(db, "a@example.com")
    with db.transaction() as session:
        bans.lift(session, ban_id, "cli", NOW)
        result = bans.add_many(
            session,
            patterns=[parse_pattern("a@example.com")],
            list_address=None,
            reason=None,
            created_by="cli",
            now=NOW,
        )
    assert result == (1, 0)


def test_bans_of_a_case_are_listed_whatever_their_state(db: Database) -> None:
    from storage.models import Case

    with db.transaction() as session:
        session.add(
            Case(number=1, status="new", last_activity_at=NOW, created_at=NOW, updated_at=NOW)
        )
    first = add(db, "a@example.com", case=1)
    add(db, "b@example.com")
    with db.transaction() as session:
        bans.lift(session, first, "cli", NOW)
        assert [r.ban.id for r in bans.for_case(session, 1)] == [first]


def test_two_connections_see_each_other_s_changes_through_the_marker(database_url: str) -> None:
    first, second = Database(database_url), Database(database_url)
    try:
        with first.transaction() as session:
            before = bans.version(session)
        add(second, "a@example.com")
        with first.transaction() as session:
            assert bans.version(session) == before + 1
            assert [str(b.pattern) for b in bans.load_active(session, NOW)] == ["a@example.com"]
    finally:
        first.dispose()
        second.dispose()
