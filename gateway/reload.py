"""SIGHUP (SPEC section 10): re-read the configuration and apply it from the next transaction.

The file is read and validated in a worker thread, as at start-up; a file that fails is
refused with the start-up message and the running settings stay in force. Keys that
shape what was bound or created at start keep their running value until a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gateway import config, config_files, logs
from gateway.config import ConfigError, Settings
from gateway.settings_holder import SettingsHolder

log = logs.get("reload")

Key = tuple[str, str]  # (section, key) as the file spells them

# SPEC section 10's list. previous_secret_file joins it: the secrets are read and checked
# against the database's fingerprint once, before any listener opens. `[imap] enabled`
# too: the IMAP watcher is a component that exists only if it was enabled at start.
RESTART_ONLY: tuple[Key, ...] = (
    ("smtp", "listen"),
    ("policy", "listen"),
    ("metrics", "listen"),
    ("storage", "url"),
    ("gateway", "secret_file"),
    ("gateway", "previous_secret_file"),
    ("gateway", "conduct_address"),
    ("gateway", "case_tag"),
    ("gateway", "local_domains"),
    ("imap", "enabled"),
)

# Settings fields that are not a section's dataclass, and the key each one is read from.
_SCALAR_KEYS: dict[str, Key] = {
    "moderators": ("moderators", "*"),
    "policy_listen": ("policy", "listen"),
    "require_dkim": ("auth", "require_dkim"),
    "metrics_listen": ("metrics", "listen"),
    "log_level": ("logging", "level"),
    "log_format": ("logging", "format"),
}
# Fields of a section's dataclass whose key in the file has another name.
_RENAMED: dict[Key, Key] = {("outbound", "maildir"): ("outbound", "smarthost")}


def changed_keys(old: Settings, new: Settings) -> list[Key]:
    """The keys whose value differs, in file order, each once; never the values."""
    found: dict[Key, None] = {}
    for key in _differences(old, new):
        found[key] = None
    return list(found)


def _differences(old: Settings, new: Settings) -> Iterator[Key]:
    for field in dataclasses.fields(Settings):
        name = field.name
        if name == "path":
            continue
        before, after = getattr(old, name), getattr(new, name)
        if dataclasses.is_dataclass(before) and dataclasses.is_dataclass(after):
            for inner in dataclasses.fields(before):
                if getattr(before, inner.name) != getattr(after, inner.name):
                    yield _RENAMED.get((name, inner.name), (name, inner.name))
        elif before != after:
            section, _, key = name.partition("_")
            yield _SCALAR_KEYS.get(name, (section, key or "*"))


def keep_restart_only(running: Settings, loaded: Settings) -> tuple[Settings, list[Key]]:
    """`loaded` with every restart-only key at its running value, and the keys so kept."""
    waiting = [key for key in changed_keys(running, loaded) if key in RESTART_ONLY]
    gateway = dataclasses.replace(
        loaded.gateway,
        conduct_address=running.gateway.conduct_address,
        case_tag=running.gateway.case_tag,
        local_domains=running.gateway.local_domains,
        secret_file=running.gateway.secret_file,
        previous_secret_file=running.gateway.previous_secret_file,
    )
    # Switching IMAP on or off keeps the whole running [imap]: a watcher that runs needs
    # its host and credentials, and one that does not run has no use for new ones.
    imap = loaded.imap if loaded.imap.enabled == running.imap.enabled else running.imap
    applied = dataclasses.replace(
        loaded,
        path=running.path,
        gateway=gateway,
        smtp=dataclasses.replace(loaded.smtp, listen=running.smtp.listen),
        storage=dataclasses.replace(loaded.storage, url=running.storage.url),
        imap=imap,
        policy_listen=running.policy_listen,
        metrics_listen=running.metrics_listen,
    )
    return applied, waiting


def load_checked(path: Path) -> Settings:
    """What start-up checks before it serves: the file, then the files it names."""
    settings = config.load(path)
    config_files.check(settings)
    return settings


class Reloader:
    """`request()` is the SIGHUP handler; reloads run one at a time, in order."""

    def __init__(
        self,
        holder: SettingsHolder,
        load: Callable[[Path], Settings] = load_checked,
    ) -> None:
        self._holder = holder
        self._load = load
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[bool]] = set()

    def request(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload(), name="config-reload")
        self._tasks.add(task)  # a reference, so the task is not collected mid-way
        task.add_done_callback(self._tasks.discard)

    async def reload(self) -> bool:
        """Apply the file as it is now; False when it was refused."""
        async with self._lock:
            running = self._holder.current()
            try:
                loaded = await asyncio.to_thread(self._load, running.path)
            except ConfigError as error:
                _refused(error)
                return False
            except Exception as error:
                # Not a configuration problem the reader could name: still refused, never fatal.
                logs.event(
                    log,
                    logging.ERROR,
                    "config-reload-refused",
                    file=str(running.path),
                    error=type(error).__name__,
                    exc_info=error,
                )
                return False
            applied, waiting = keep_restart_only(running, loaded)
            changed = changed_keys(running, applied)
            self._holder.replace(applied)
            logs.configure(applied.log_level, applied.log_format)
            for section, key in waiting:
                # The key names only: a value can be a path to a secret or an address.
                logs.event(
                    log, logging.WARNING, "config-change-needs-restart", section=section, key=key
                )
            if running.require_dkim and not applied.require_dkim:
                logs.event(
                    log,
                    logging.WARNING,
                    "dkim-not-required",
                    detail="[auth] require_dkim = no: staff commands are trusted on the "
                    "signed address alone",
                )
            logs.event(
                log,
                logging.INFO,
                "config-reloaded",
                file=str(running.path),
                changed=",".join(_name(key) for key in changed) or None,
            )
            return True


def _refused(error: ConfigError) -> None:
    fields: dict[str, Any] = {"file": error.file}
    if error.section:
        fields["section"] = error.section
    if error.key:
        fields["key"] = error.key
    logs.event(log, logging.ERROR, "config-reload-refused", message=str(error), **fields)


def _name(key: Key) -> str:
    section, name = key
    return section if name == "*" else f"{section}.{name}"
