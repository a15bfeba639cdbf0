"""The texts of every mail the gateway writes; `{name}` placeholders filled by `render`."""

from __future__ import annotations

from collections.abc import Mapping
from string import Formatter

from rules.errors import GatewayError

SIGNATURE = "-- \nThe {case_tag} team\n"  # "-- " is the signature separator (RFC 3676)

# The acknowledgement follows the community's response procedure: what happens next,
# what helps, care for the reporter, danger. It says nothing about who received the
# report (recused staff and reports to conduct+director@ make "everyone" false, and
# naming who did would tell a reporter about a recusal). It quotes nothing from it, and
# (by policy) never invites withdrawing, never asks how to handle the case and never
# offers a say in penalties; tests/handlers/test_templates.py checks the wording.
ACKNOWLEDGEMENT = (
    """\
Thank you for writing to the {case_tag} team. Your report is recorded as
case #{case} and has been passed to the people who handle it.

What happens next: one of them will reply to you personally. We
will look into what you described, may ask you or others for more details,
and will tell you when we have decided what to do.

If you can, reply to this message with anything that helps us:
- who was involved, and how we can reach them;
- who was targeted, if that was not you;
- what happened, when and where;
- who else saw it or was affected;
- whether you wish to stay anonymous to the person you reported (we keep
  your name and address from them unless you tell us otherwise).

You do not need to engage any further with the person you reported.

If you would like help, a safe person to talk to or a safe space, reply to
this message and say so.

If you or anyone else is in immediate danger, please contact your local
authorities or emergency services first.

Replies to this message reach only the people handling your report.

"""
    + SIGNATURE
)

STAFF_REPORT = """\
A new report opened case #{case}{urgent_marker}.

From:     {sender}
Subject:  {subject}
Received: {received}
Rule:     {rule}{related}{recusal}

Reply to this message to add an internal note (seen by staff only).

----- message text -----
{text}
----- end of message text (the original is attached) -----
"""

STAFF_COPY = """\
New mail on case #{case}{urgent_marker} from the {role}.

From:     {sender}
Subject:  {subject}
Received: {received}
Rule:     {rule}

Reply to this message to add an internal note (seen by staff only).

----- message text -----
{text}
----- end of message text (the original is attached) -----
"""

STAFF_NOTE = """\
Internal note on case #{case} from {author} (staff only; not sent to anyone else).

{text}
"""

DIRECTOR_REPORT = """\
A report sent to the executive director's address opened case #{case}{urgent_marker}.
It has been sent to you alone.

From:     {sender}
Subject:  {subject}
Received: {received}{recusal}

----- message text -----
{text}
----- end of message text (the original is attached) -----
"""

POSTMASTER_COPY = """\
Mail for postmaster@{domain} received by the {case_tag} gateway.

From:     {sender}
Subject:  {subject}
Received: {received}

The original is attached.
"""

BOUNCE_NOTICE = """\
Mail from the {case_tag} gateway could not be delivered.

Case:       {case}
Outbox id:  {outbox_id}
Recipient:  {recipient}
Sent:       {sent}
Message-ID: {message_id}
Status:     {status}
Diagnostic: {diagnostic}

The mail will not be retried. (The delivery status notification itself is kept
by the gateway, not forwarded: what it returns may be meant for someone else.)
"""


HELD_POST = """\
A post to {list} was held, HELD-ID {held_id}.

Why:      {reason}
From:     {sender}
Subject:  {subject}
Held at:  {held_at}

To let it through, send a command mail with "#release {held_id}"; to drop it,
"#discard {held_id}" (or use `conduct-gateway held release|discard {held_id}`).
Held posts are discarded after {hold_days} days. The post is attached.
"""

UPSTREAM_REFUSED = """\
The list server refused a post to {list} that the gateway had accepted.

Reply:    {reply}
From:     {sender}
Subject:  {subject}
At:       {at}

The sender was not told (refusals after acceptance are never bounced). The post
is attached.
"""

COMMAND_RESULT = """\
Your commands on case #{case}:

{results}
"""

# What #reply, #to and #notify-accused send: the staff member's text alone, from the
# conduct address, with no trace of who wrote it (SPEC section 5).
OUTGOING = (
    """\
{text}

"""
    + SIGNATURE
)

ESCALATION = """\
Case #{case} is escalated to you by {by}.

Status:       {status}
Opened:       {opened}
Last message: {last_message}
Escalated:    {escalated}
Urgent:       {urgent}

Participants:
{participants}

Reply to this message to add a note or to command the case (#status, #close, ...).

{history}
"""

MODERATION = """\
{text}
"""

# The IMAP watcher leaves a message larger than [smtp] max_message_size in its folder
# and tells staff once (issue 6); staff read it in the mailbox itself.
IMAP_TOO_LARGE = """\
A message in the watched IMAP folder {folder} is larger than [smtp]
max_message_size ({limit} bytes), so the gateway has not taken it in. It stays in
the folder, flagged {keyword}, and no case was opened for it.

Size:       {size} bytes
Message-ID: {message_id}
From:       {sender}
Subject:    {subject}
Date:       {date}
IMAP UID:   {uid} (UIDVALIDITY {uidvalidity})

Please read it in the mailbox itself. To have the gateway take it in, raise
max_message_size (the watcher tries again on its next pass), or forward the
parts that matter to the conduct address.
"""

IMAP_REFUSED = """\
A message in the watched IMAP folder {folder} could not be stored: the database
refused it. The gateway has not taken it in. It stays in the folder, flagged
{keyword}, and no case was opened for it.

Size:       {size} bytes
Message-ID: {message_id}
From:       {sender}
Subject:    {subject}
Date:       {date}
IMAP UID:   {uid} (UIDVALIDITY {uidvalidity})

Please read it in the mailbox itself, and forward the parts that matter to the
conduct address. The gateway does not try it again by itself; the operator's log
names the error (imap-store-refused). Moved out of the folder and back, it is
tried once more.
"""

REMINDER = """\
{text}
Reply to this message to add a note to the case or to command it.
"""

TEMPLATES: Mapping[str, str] = {
    "acknowledgement": ACKNOWLEDGEMENT,
    "staff-report": STAFF_REPORT,
    "staff-copy": STAFF_COPY,
    "staff-note": STAFF_NOTE,
    "director-report": DIRECTOR_REPORT,
    "postmaster-copy": POSTMASTER_COPY,
    "bounce-notice": BOUNCE_NOTICE,
    "held-post": HELD_POST,
    "upstream-refused": UPSTREAM_REFUSED,
    "command-result": COMMAND_RESULT,
    "outgoing": OUTGOING,
    "escalation": ESCALATION,
    "moderation": MODERATION,
    "reminder": REMINDER,
    "imap-too-large": IMAP_TOO_LARGE,
    "imap-refused": IMAP_REFUSED,
}


class TemplateError(GatewayError):
    def __init__(self, name: str, missing: set[str]) -> None:
        super().__init__(f"template {name!r} needs {', '.join(sorted(missing))}")


def fields(name: str) -> set[str]:
    return {f for _, f, _, _ in Formatter().parse(TEMPLATES[name]) if f}


def render(name: str, params: Mapping[str, str]) -> str:
    """Fill a template; every placeholder must be given (no silent blanks)."""
    missing = fields(name) - set(params)
    if missing:
        raise TemplateError(name, missing)
    return TEMPLATES[name].format_map(dict(params))
