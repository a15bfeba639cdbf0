"""Verdicts shared by the handlers; rule ids are stable kebab-case strings used in logs."""

from __future__ import annotations

import enum


class Verdict(enum.Enum):
    ACCEPT = "accept"
    HOLD = "hold"
    REJECT = "reject"
    DISCARD = "discard"
