"""Danger signals in a report's text, which make a case urgent (SPEC section 5)."""

from __future__ import annotations

import re
import unicodedata

# Errs toward urgent: a false alarm costs the director one mail, a missed one can cost
# someone's safety. So the matching is by word stem with a leading word boundary only
# ("threatened", "stalker" and "non-violent" all match), negation is not understood
# ("I do not feel threatened" is urgent), and technical uses of "kill" count too. The
# leading boundary keeps out words that merely contain a stem ("skill", "unthreatening");
# stems that would catch common harmless words ("dox" in "doxygen", "gun" in
# "gunicorn", "rape" in "grapes") are spelled out whole. English only.
_SIGNALS: tuple[tuple[str, str], ...] = (
    ("threat", r"\bthreat\w*|\bblackmail\w*|\bextort\w*|\bintimidat\w*"),
    ("violence", r"\bviolen(?:ce|t|tly)\b|\bbeat(?:s|en|ing)?\s+(?:me|him|her|them|up)\b"),
    ("unsafe", r"\bunsafe\b|(?:\bnot|n['’]t)\s+(?:feel\s+|be\s+|being\s+)?safe\b"),
    ("danger", r"\bdanger\w*|\bemergency\b"),
    ("self-harm", r"\bself[-\s]?harm\w*|\b(?:cut|cutting|harm|harming)\s+myself\b"),
    (
        "suicide",
        r"\bsuicid\w*|\b(?:kill|killing|end|ending)\s+myself\b|\bend(?:ing)?\s+my\s+life\b"
        r"|\bwant\s+to\s+die\b",
    ),
    ("stalking", r"\bstalk(?:s|ed|er|ers|ing)?\b|\bfollow(?:s|ed|ing)?\s+me\s+home\b"),
    (
        "assault",
        r"\bassault\w*|\brap(?:e|ed|es|ing|ist|ists)\b|\bgrop(?:e|ed|es|ing)\b"
        r"|\bmolest\w*|\battack(?:s|ed|ing)?\s+(?:me|him|her|them)\b",
    ),
    ("weapon", r"\bweapons?\b|\bguns?\b|\bfirearms?\b|\bknife\b|\bknives\b|\bpistol\b"),
    ("kill", r"\bkill(?:s|ed|ing|er)?\b|\bmurder\w*"),
    ("hurt", r"\bhurt\w*|\bharm(?:s|ed|ing)?\b|\binjur\w*"),
    (
        "fear-for-life",
        r"\b(?:afraid|scared|fear(?:ing|ful)?|terrified)\s+(?:for|of\s+losing)\s+my\s+"
        r"(?:life|safety)\b",
    ),
    (
        "doxxing",
        r"\bdox{1,2}(?:ed|es|ing)?\b|\b(?:posted|published|shared|leaked)\s+my\s+"
        r"(?:home\s+)?(?:address|phone\s+number)\b",
    ),
)
_PATTERNS = tuple((name, re.compile(rx, re.IGNORECASE)) for name, rx in _SIGNALS)
SIGNALS = tuple(name for name, _rx in _SIGNALS)


def _prepare(text: str) -> str:
    # NFKC folds full-width and compatibility letters, so "ｋｉｌｌ" reads as "kill".
    return unicodedata.normalize("NFKC", text)


def urgency_signals(text: str) -> tuple[str, ...]:
    """The names of the danger signals in `text`, each once, in the order of SIGNALS."""
    prepared = _prepare(text)
    return tuple(name for name, pattern in _PATTERNS if pattern.search(prepared))


def is_urgent(text: str) -> bool:
    """Whether `text` carries any danger signal; errs toward yes."""
    prepared = _prepare(text)
    return any(pattern.search(prepared) for _name, pattern in _PATTERNS)
