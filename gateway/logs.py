"""One line per event on stderr, key=value or JSON; addresses only at debug (SPEC section 10)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

LOGGER_NAME = "conduct_gateway"
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def get(component: str) -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{component}")


def event(
    logger: logging.Logger,
    level: int,
    name: str,
    *,
    exc_info: BaseException | bool | None = None,
    **fields: Any,
) -> None:
    """Log event `name` with fields; callers pass ids and rule names, never bodies or secrets.

    With `exc_info`, only the exception's type is written: its message may quote mail.
    """
    if logger.isEnabledFor(level):
        logger.log(level, name, exc_info=exc_info, extra={"fields": fields})


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "component": record.name.removeprefix(LOGGER_NAME + "."),
            "event": record.getMessage(),
        }
        data.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type only: a message can quote mail content.
            data["exception"] = record.exc_info[0].__name__
        if self.as_json:
            return json.dumps(data, default=str, ensure_ascii=False)
        return " ".join(f"{key}={_quote(value)}" for key, value in data.items())


def _quote(value: Any) -> str:
    text = "" if value is None else str(value)
    if text and not any(ch in text for ch in ' "=\\\n\r\t'):
        return text
    return json.dumps(text, ensure_ascii=False)


def configure(level: str, fmt: str) -> None:
    """Route the gateway's loggers to stderr; called again on SIGHUP with new values."""
    root = logging.getLogger(LOGGER_NAME)
    root.setLevel(_LEVELS[level])
    root.propagate = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(as_json=fmt == "json"))
    root.handlers[:] = [handler]
    # Libraries (aiosmtpd, APScheduler, SQLAlchemy) log through the root logger: the same
    # one-line format, warnings and above only, and never a traceback (it can quote mail).
    libraries = logging.getLogger()
    libraries.setLevel(logging.WARNING)
    libraries.handlers[:] = [handler]
    logging.captureWarnings(True)
