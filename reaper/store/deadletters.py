"""Dead letters: cascades that failed for good, for an operator to read, replay or drop.

A dead letter is the intent as it failed (steps left, attempts, the last error of each
step) plus ``dead_at``, pushed to the head of ``reaper:cascade:dead`` (newest first). An
intent that could not even be read is kept as ``{id, raw, last_error}``.

Replaying a letter moves it back to the pending cascades as a fresh start (attempts 0,
created and due now), atomically: the letter leaves the list in the same script that
schedules its intent. The liveness check still guards its irreversible steps. A purge's letter
(cleanup-all, delete all guests) is replayed only while no signaling server is attached: on a
live tier the drain's gate would drop it anyway, so it stays, and the operator is told why.
"""

import dataclasses
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis

from reaper.core import ownkeys
from reaper.core import redact
from reaper.store.cascade_scripts import GONE, MOVED, PENDING, RetryLetter
from reaper.core.intents import PURGE_ID, PURGE_STEPS, Intent, guest_id
from reaper.core.keys import Keys
from reaper.store.client import redis_now, require_types

PAGE = 1000  # letters read per LRANGE
SHOWN_CHARS = 300  # of one value in `dead-letters list`: a huge one is cut


@dataclass(frozen=True)
class Letter:
    raw: bytes  # exactly as stored: LREM removes this value and no other
    id: str
    data: dict  # {} when it cannot be read
    intent: Intent | None  # None when it cannot be replayed as it stands

    @classmethod
    def parse(cls, raw: bytes) -> "Letter":
        try:
            value = ownkeys.loads(raw)
        except ValueError:
            value = None
        data = _fields_of(value)
        if data is None:
            return cls(raw, _id_of(value, raw), {}, None)
        return cls(raw, data["id"], data, _intent_of(raw))

    @property
    def readable(self) -> bool:
        return bool(self.data)

    def summary(self, now: float) -> dict:
        """What `reaper dead-letters list` shows of it: of one that cannot be read, only its id
        (to drop it by), the rest skipped."""
        created, dead_at = self.data.get("created"), self.data.get("dead_at")
        return {"readable": self.readable,
            "id": self.id, "user_id": self.data.get("user_id"), "reason": self.data.get("reason"),
            "age_s": None if created is None else round(now - created, 1),
            "dead_for_s": None if dead_at is None else round(now - dead_at, 1),
            "attempts": self.data.get("attempts"), "steps": self.data.get("steps"),
            "errors": self.data.get("errors") or {}, "last_error": self.data.get("last_error"),
            "replayable": self.intent is not None,
        }


# Each field a letter may hold and the types reaper writes it with; a letter with another is
# unreadable (listed as skipped, never replayed). Fields of a later version are ignored.
_TEXT, _NUMBER, _NONE = (str,), (int, float), (type(None),)
FIELDS = {"id": _TEXT, "reason": _TEXT + _NONE, "user_id": _TEXT + _NONE, "socket_id": _TEXT + _NONE,
          "created": _NUMBER + _NONE, "dead_at": _NUMBER + _NONE, "attempts": (int,) + _NONE,
          "steps": (list,) + _NONE, "errors": (dict,) + _NONE, "last_error": _TEXT + _NONE,
          "raw": _TEXT + _NONE}


def _fields_of(value) -> dict | None:
    """The letter's fields, or None when it is not one reaper wrote: not an object, no id, or a
    field of another type."""
    if not isinstance(value, dict) or not isinstance(value.get("id"), str):
        return None
    known = {k: v for k, v in value.items() if k in FIELDS}
    return known if all(_fits(k, v) for k, v in known.items()) else None


def _fits(name: str, value) -> bool:
    if isinstance(value, bool) or not isinstance(value, FIELDS[name]):
        return False
    if name == "steps" and value is not None:
        return all(isinstance(step, str) for step in value)
    if name == "errors" and value is not None:
        return all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    return True


def _intent_of(raw: bytes) -> Intent | None:
    """The intent to replay, or None: one that cannot run as it stands, or whose id is not the
    one its user's cascade has (a replay would run beside that cascade, not instead of it)."""
    try:
        intent = Intent.from_json(raw)
    except (ValueError, TypeError):
        return None
    own_id = PURGE_ID if intent.user_id is None else guest_id(intent.user_id)
    return intent if intent.id == own_id else None


def _id_of(value, raw: bytes) -> str:
    """A letter's own id when it names one, else a fingerprint: either way `drop ID` finds it."""
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value["id"]
    return _fingerprint(raw)


def _fingerprint(raw: bytes) -> str:
    """An id for a letter that carries none: stable, so `drop` can name it."""
    return "raw:" + hashlib.sha1(raw).hexdigest()[:12]


@dataclass
class Outcome:
    """What retry or drop did, letter by letter."""

    verb: str
    done: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # a cascade with that id runs already
    unreadable: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # no such letter, or gone meanwhile
    refused: list[str] = field(default_factory=list)  # why each purge letter was left (a live tier)

    @property
    def complete(self) -> bool:
        return not (self.pending or self.unreadable or self.missing or self.refused)

    def lines(self) -> list[str]:
        lines = []
        if self.done or self.complete:
            lines.append(f"{self.verb.capitalize()} {_count(len(self.done))}{_names(self.done)}")
        lines.extend(self.refused)
        if self.pending:
            lines.append(f"Left {len(self.pending)}, a cascade with the same id is pending already "
                         f"(retry once it is done, or drop the letter){_names(self.pending)}")
        if self.unreadable:
            lines.append(f"Left {len(self.unreadable)} unreadable (drop it, or fix it by hand)"
                         f"{_names(self.unreadable)}")
        if self.missing:
            lines.append(f"No dead letter with id{_names(self.missing)}")
        return lines


def _count(n: int) -> str:
    return f"{n} dead letter{'' if n == 1 else 's'}"


def _names(ids: list[str], shown: int = 10) -> str:
    if not ids:
        return ""
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return ": " + ", ".join(_shown(i) for i in ids[:shown]) + more


def _shown(text: str, limit: int = SHOWN_CHARS) -> str:
    """Text of a letter as a line shows it: scrubbed of credentials, cut, controls escaped."""
    return redact.printable(redact.cut(redact.scrub(text), limit))


def purge_refusal(intent: Intent, servers: int | str) -> str | None:
    """Why a purge's letter may not be replayed now, or None: ``servers`` signaling servers are
    attached (or why that could not be asked). A guest's letter is never refused here."""
    steps = [step for step in intent.steps if step in PURGE_STEPS]
    if not steps or servers == 0:
        return None
    what = f"purge step{'s' if len(steps) > 1 else ''} {', '.join(steps)} not retried"
    if isinstance(servers, str):
        return f"{what}: {servers}, so the tier may hold live guests; retry once that can be asked"
    attached = "1 signaling server is" if servers == 1 else f"{servers} signaling servers are"
    return (f"{what}: {attached} attached, so the tier holds live guests; it would be dropped anyway "
            f"(retry it once the tier is cold, or `reaper dead-letters drop {intent.id}`)")


class DeadLetters:
    def __init__(self, client: redis.Redis, keys: Keys, tier=None):
        """``tier``: the signaling servers (signaling.SignalingCluster), asked before a purge's
        letter is replayed; None for a tier without the socket.io adapter (always cold)."""
        self.client, self.keys, self.tier = client, keys, tier
        self._retry = RetryLetter(client, keys)

    def count(self) -> int:
        self._require_list()
        return self.client.llen(self.keys.dead)

    def _require_list(self) -> None:
        require_types(self.client, self.keys, ("dead",))

    def letters(self, limit: int | None = None) -> Iterator[Letter]:
        """Newest first, one page at a time."""
        self._require_list()
        start = 0
        while limit is None or start < limit:
            stop = start + PAGE - 1 if limit is None else min(start + PAGE, limit) - 1
            page = self.client.lrange(self.keys.dead, start, stop)
            yield from (Letter.parse(raw) for raw in page)
            if len(page) < stop - start + 1:
                return
            start = stop + 1

    def listing(self, limit: int) -> dict:
        """The newest ``limit`` letters, and how many of them cannot be read (listed by id only)."""
        now, total = redis_now(self.client), self.count()
        letters = [_scrubbed(l.summary(now)) for l in self.letters(limit)]
        return {"total": total, "letters": letters,
                "unreadable": sum(1 for letter in letters if not letter["readable"])}

    def select(self, cascade_id: str | None) -> list[Letter]:
        """Every letter (None), or the newest one with this id (none when there is none)."""
        require_types(self.client, self.keys, ("dead", "intents", "due"))  # what retry writes
        if cascade_id is None:
            return list(self.letters())
        return next(([l] for l in self.letters() if l.id == cascade_id), [])

    def retry(self, cascade_id: str | None) -> Outcome:
        """Move the selected letters back to the pending cascades, due now."""
        outcome = Outcome("retried")
        chosen = self._chosen(cascade_id, outcome)
        now = redis_now(self.client)
        for letter in chosen:
            if letter.intent is None:
                outcome.unreadable.append(letter.id)
                continue
            refusal = purge_refusal(letter.intent, self._servers()) if _purges(letter.intent) else None
            if refusal:
                outcome.refused.append(refusal)
                continue
            moved = self._retry(letter.raw, letter.intent.id, fresh(letter.intent, now).to_json(), now)
            {MOVED: outcome.done, GONE: outcome.missing, PENDING: outcome.pending}[moved].append(letter.id)
        return outcome

    def _servers(self) -> int | str:
        """Signaling servers attached now (PUBSUB NUMSUB), or why Redis would not say."""
        if self.tier is None:
            return 0
        try:
            return self.tier.servers()
        except redis.ResponseError as exc:  # an ACL without PUBSUB, say; unreachable: raised
            return f"could not ask whether a signaling server is attached ({redact.printable(str(exc))})"

    def drop(self, cascade_id: str | None) -> Outcome:
        """Remove the selected letters for good."""
        outcome = Outcome("dropped")
        for letter in self._chosen(cascade_id, outcome):
            removed = self.client.lrem(self.keys.dead, 1, letter.raw)
            (outcome.done if removed else outcome.missing).append(letter.id)
        return outcome

    def _chosen(self, cascade_id: str | None, outcome: Outcome) -> list[Letter]:
        chosen = self.select(cascade_id)
        if cascade_id is not None and not chosen:
            outcome.missing.append(cascade_id)
        return chosen


def _purges(intent: Intent) -> bool:
    return any(step in PURGE_STEPS for step in intent.steps)


def _scrubbed(value):
    """Every text of a summary scrubbed of credentials: a last error may quote a reply."""
    if isinstance(value, str):
        return redact.scrub(value)
    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    return value


def fresh(intent: Intent, now: float) -> Intent:
    """The intent starting over: no attempts, no errors, and a new age (cascade_max_age)."""
    return dataclasses.replace(intent, created=now, attempts=0, last_error=None, errors={},
                               steps=list(intent.steps))


def format_age(seconds: float | None) -> str:
    """2d3h, 4h12m, 5m7s, 42s: two units at most."""
    if seconds is None:
        return "?"
    seconds = max(0, int(seconds))
    parts = [(seconds // 86400, "d"), (seconds % 86400 // 3600, "h"), (seconds % 3600 // 60, "m"),
             (seconds % 60, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n]
    return "".join(shown[:2]) or "0s"


def as_text(listing: dict) -> str:
    letters, total, skipped = listing["letters"], listing["total"], listing.get("unreadable", 0)
    if not total:
        return "No dead letters."
    lines = [f"{_count(total)} (newest first):"]
    for letter in letters:
        lines.append(f"{_shown(letter['id'])}  user={_shown(letter['user_id'] or '-')}  "
                     f"reason={_shown(letter['reason'] or '-')}  "
                     f"age={format_age(letter['age_s'])}  dead for {format_age(letter['dead_for_s'])}  "
                     f"attempts={_shown(str(letter['attempts'])) if letter['attempts'] is not None else '?'}"
                     + ("" if letter["replayable"] else "  (unreadable: drop only)"))
        errors = letter["errors"] or ({"error": letter["last_error"]} if letter["last_error"] else {})
        lines.extend(f"    {_shown(step)}: {_shown(error)}" for step, error in errors.items())
    if skipped:
        lines.append(f"{skipped} {'entry' if skipped == 1 else 'entries'} unreadable, skipped: listed "
                     "by id only (`reaper dead-letters drop ID` removes one)")
    if total > len(letters):
        lines.append(f"... and {total - len(letters)} older (--limit to see more)")
    return "\n".join(lines)
