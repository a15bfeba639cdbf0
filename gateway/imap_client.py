"""A thin typed wrapper over imapclient: connect, list, fetch, move, and IDLE with a watchdog.

Every call blocks; the watcher runs them in its own thread. imapclient and socket errors
come out as `ImapError` subclasses, so the caller decides between back-off and giving up.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from imapclient import IMAPClient
from imapclient import exceptions as imap_errors

from rules.errors import GatewayError

BODY = b"BODY[]"  # the FETCH item BODY.PEEK[] answers with
IDLE_TICK = 1.0  # how often an IDLE wait looks at the stop flag
QUICK_EMPTY_LIMIT = 3  # idle_check returning nothing at once, this often in a row: EOF
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 60, 15, 4  # seconds, seconds, probes


class ImapError(GatewayError):
    """The server refused a command, or the connection failed."""


class ImapLoginFailed(ImapError):
    def __init__(self) -> None:
        super().__init__("the IMAP server refused the username or password")


class ImapConnectionLost(ImapError):
    def __init__(self, why: str) -> None:
        super().__init__(f"IMAP connection lost: {why}")


@dataclass(frozen=True)
class Selected:
    uidvalidity: int
    exists: int


@dataclass(frozen=True)
class Listed:
    """A message in the folder, as the watcher decides about it before fetching its bytes.

    `size` is exact for the larger messages, an upper bound for the others; `flags` are
    known only for the larger ones (the too-large keyword is all they are read for).
    """

    uid: int
    size: int
    flags: tuple[str, ...]


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except ImapError:
        raise
    except imap_errors.LoginError as error:
        raise ImapLoginFailed() from error
    except (imap_errors.IMAPClientAbortError, OSError, EOFError) as error:
        # socket.timeout and ssl.SSLError are OSErrors: a silent or broken connection.
        raise ImapConnectionLost(type(error).__name__) from error
    except imap_errors.IMAPClientError as error:
        raise ImapError(f"IMAP command failed: {error}") from error


def connect(
    host: str,
    port: int,
    security: str,
    username: str,
    password: str,
    *,
    timeout: float,
    tls_context: ssl.SSLContext | None = None,
) -> ImapConnection:
    """A logged-in connection; `security` is ssl (implicit TLS), starttls or none."""
    # Loading the system's CA certificates costs more than the login: only when used.
    context = None if security == "none" else tls_context or ssl.create_default_context()
    with _translated():
        client = IMAPClient(
            host,
            port=port,
            ssl=security == "ssl",
            ssl_context=context if security == "ssl" else None,
            timeout=timeout,
        )
        connection = ImapConnection(client)
        _keepalive(client.socket())
        try:
            if security == "starttls":
                client.starttls(context)
            client.login(username, password)
        except BaseException:
            connection.abort()
            raise
    return connection


def _quiet(client: Any) -> None:
    """Turn off imaplib's protocol trace, which imapclient turns on (`debug = 5`) and
    sends to its own logger.

    The gateway never shows that logger (libraries log warnings only), yet imaplib
    formats a repr of every line and every message it reads for it. That formatting costs
    more than parsing the answer: a backlog fetch is about a third faster without it.
    And the text of a report is never formatted for a log.
    """
    imaplib = getattr(client, "_imap", None)
    if imaplib is not None:
        imaplib.debug = 0


class ImapConnection:
    """One logged-in session; `abort` may be called from another thread to unblock it."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()
        _quiet(client)

    def has(self, capability: str) -> bool:
        with _translated():
            return bool(self._client.has_capability(capability))

    def select(self, folder: str) -> Selected:
        with _translated():
            found = self._client.select_folder(folder)
        self.new_mail_pending()  # SELECT's own EXISTS is the count, not news
        return Selected(int(found[b"UIDVALIDITY"]), int(found.get(b"EXISTS", 0)))

    def ensure_folder(self, folder: str) -> bool:
        """Create `folder` when missing; True when it was created."""
        with _translated():
            if self._client.folder_exists(folder):
                return False
            self._client.create_folder(folder)
            return True

    def listing(self, small: int) -> list[Listed]:
        """Every message not marked \\Deleted, lowest UID first.

        Two SEARCHes (every UID, then those LARGER than `small` bytes) each answer in one
        line, where a FETCH of every size and flag costs a parsed line per message. Only
        the larger messages have their size and flags fetched; the others are listed at
        `small` bytes, an upper bound. Messages never change size, so a message that
        arrives between the two searches is either in neither list or left for the next
        pass.
        """
        with _translated():
            uids = sorted(int(u) for u in self._client.search(["NOT", "DELETED"]))
            found = self._client.search(["NOT", "DELETED", "LARGER", str(small)])
            larger = set(uids).intersection(int(u) for u in found)
            ordered = sorted(larger)
            exact: dict[int, Listed] = {}
            for start in range(0, len(ordered), 1000):
                data = self._client.fetch(ordered[start : start + 1000], ["RFC822.SIZE", "FLAGS"])
                for uid, item in data.items():
                    flags = tuple(_text(f) for f in item.get(b"FLAGS", ()))
                    exact[int(uid)] = Listed(int(uid), int(item.get(b"RFC822.SIZE", 0)), flags)
        listed: list[Listed] = []
        for uid in uids:
            if uid in exact:
                listed.append(exact[uid])
            elif uid not in larger:  # (a larger one expunged before its FETCH is gone)
                listed.append(Listed(uid, small, ()))
        return listed

    def fetch(self, uids: Iterable[int]) -> dict[int, bytes]:
        """The raw bytes of each message; BODY.PEEK keeps it unseen until it is moved."""
        wanted = list(uids)
        with _translated():
            data = self._client.fetch(wanted, ["BODY.PEEK[]"])
        return {int(uid): bytes(item[BODY]) for uid, item in data.items() if BODY in item}

    def header_fields(self, uid: int, names: Iterable[str]) -> bytes:
        part = f"BODY.PEEK[HEADER.FIELDS ({' '.join(names)})]"
        with _translated():
            data = self._client.fetch([uid], [part])
        for key, value in data.get(uid, {}).items():
            if key.startswith(b"BODY[HEADER.FIELDS"):
                return bytes(value)
        return b""

    def move(self, uids: Iterable[int], folder: str) -> None:
        """MOVE (RFC 6851) where offered, else COPY, \\Deleted and UID EXPUNGE (RFC 4315)."""
        wanted = list(uids)
        with _translated():
            if self._client.has_capability("MOVE"):
                self._client.move(wanted, folder)
                return
            self._client.copy(wanted, folder)
            self._client.add_flags(wanted, [b"\\Deleted"], silent=True)
            if self._client.has_capability("UIDPLUS"):
                self._client.uid_expunge(wanted)
            else:
                # Without UIDPLUS only a plain EXPUNGE exists (it also removes other
                # \Deleted messages in the folder, which is what a client expects anyway).
                self._client.expunge()

    def delete_by_message_id(self, folder: str, message_ids: Iterable[str]) -> int:
        """Expunge the messages of `folder` whose Message-ID is one of these; how many."""
        with _translated():
            if not self._client.folder_exists(folder):
                return 0
            self._client.select_folder(folder)
            uids: set[int] = set()
            for message_id in message_ids:
                found = self._client.search(["HEADER", "Message-ID", f"<{message_id}>"])
                uids.update(int(uid) for uid in found)
            if not uids:
                return 0
            self._client.add_flags(sorted(uids), [b"\\Deleted"], silent=True)
            if self._client.has_capability("UIDPLUS"):
                self._client.uid_expunge(sorted(uids))
            else:
                self._client.expunge()
            return len(uids)

    def add_keyword(self, uids: Iterable[int], keyword: str) -> None:
        with _translated():
            self._client.add_flags(list(uids), [keyword.encode()], silent=True)

    def noop(self) -> None:
        with _translated():
            self._client.noop()

    def new_mail_pending(self) -> bool:
        """Whether the server announced new mail (`* N EXISTS`) in its answer to one of the
        commands since the last SELECT, and forget it.

        imaplib files such untagged answers away and imapclient's IDLE never looks at them:
        mail that arrived during a pass would otherwise wait for the next IDLE renewal.
        """
        untagged = getattr(self._client, "_imap", None)
        responses = getattr(untagged, "untagged_responses", None)
        return isinstance(responses, dict) and responses.pop("EXISTS", None) is not None

    def idle(
        self,
        halt: threading.Event,
        renew: float,
        beat: Callable[[], None] = lambda: None,
        silence: float | None = None,
    ) -> bool:
        """Wait in IDLE (RFC 2177) until new mail or a warning (True), `renew` seconds,
        `silence` seconds without a byte from the server, or `halt` (False).

        imapclient's idle_check returns nothing, at once and forever, once the server has
        closed the connection: several quick empty returns in a row mean EOF. A server that
        stops answering sends nothing: after `silence` IDLE ends, and DONE (then the next
        pass) waits under the socket timeout, so a hung server is left within `silence`
        plus that timeout. Dovecot says "* OK Still here" every 2 minutes, so a `silence`
        above that never ends a healthy IDLE early. `beat` is called at every tick, for
        the caller's watchdog.
        """
        quiet_limit = renew if silence is None else min(silence, renew)
        with _translated():
            self._client.idle()
            started = heard = time.monotonic()
            changed = False
            quick_empty = 0
            while not halt.is_set():
                now = time.monotonic()
                if now - started >= renew or now - heard >= quiet_limit:
                    break
                beat()
                before = time.monotonic()
                responses = self._client.idle_check(timeout=IDLE_TICK)
                if responses:
                    heard = time.monotonic()
                    quick_empty = 0
                    if any(_is_bye(r) for r in responses):
                        raise ImapConnectionLost("server said BYE")
                    if any(_is_new_mail(r) or _is_warning(r) for r in responses):
                        changed = True
                        break
                elif time.monotonic() - before < IDLE_TICK / 2:
                    quick_empty += 1
                    if quick_empty >= QUICK_EMPTY_LIMIT:
                        raise ImapConnectionLost("server closed the connection during IDLE")
                else:
                    quick_empty = 0
            self._client.idle_done()
        return changed

    def abort(self) -> None:
        """Shut the socket down (safe from another thread): a blocked call fails at once."""
        with self._lock, contextlib.suppress(Exception):
            self._client.socket().shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            self._client.shutdown()

    def close(self) -> None:
        """LOGOUT, then close; errors are ignored (the connection may already be gone)."""
        try:
            self._client.logout()
        except Exception:
            self.abort()


def _keepalive(sock: socket.socket) -> None:
    """TCP keepalive: a peer that vanished (no FIN, no RST) is noticed during IDLE within
    about two minutes, instead of at the next renewal."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _is_new_mail(response: Any) -> bool:
    return isinstance(response, tuple) and len(response) >= 2 and response[1] == b"EXISTS"


def _is_warning(response: Any) -> bool:
    """An untagged NO or BAD (Dovecot's answer to the selected folder being deleted, for
    one): end IDLE and let the next pass re-select, which finds out what changed."""
    return isinstance(response, tuple) and bool(response) and response[0] in (b"NO", b"BAD")


def _is_bye(response: Any) -> bool:
    return isinstance(response, tuple) and bool(response) and response[0] == b"BYE"
