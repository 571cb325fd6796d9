"""A cascade as one drain holds it: the intent claimed, and what its run did so far."""

from dataclasses import dataclass, field

from reaper.cascade.breaker import CircuitOpen
from reaper.core.errors import StepError
from reaper.core.intents import Intent
from reaper.core.names import decode_name
from reaper.safety.gate import Check


@dataclass
class Claimed:
    intent: Intent
    raw: bytes | str  # as stored now: settling compares against it
    until: float = 0.0  # Redis time the claim runs out; writing progress back keeps it
    failures: dict[str, StepError] = field(default_factory=dict)
    deferred: dict[str, CircuitOpen] = field(default_factory=dict)  # not tried: circuit open
    dropped: str | None = None  # why the cascade ended early (live, registered)
    replaced: bool = False  # a newer intent took its place while it ran: hands off
    interrupted: bool = False  # its step was not sent because we are stopping
    held: bool = False  # its step was not sent because this replica may not act now (the gate)
    changed: bool = False  # steps done since ``raw`` was stored
    settled: bool = False  # done, and settled as soon as its last step was written back
    check: Check | None = None  # the gate's last word on its guest
    waiting: bool = False  # the gate could not tell whether its guest is live: later, uncharged

    @property
    def guest(self) -> tuple[str, str | None]:
        return self.intent.user_id, self.intent.socket_id

    @property
    def active(self) -> bool:
        return self.dropped is None and not self.replaced and not self.settled and not self.waiting

    def done(self, step: str) -> None:
        if step in self.intent.steps:
            self.intent.steps.remove(step)
            self.changed = True

    def fail(self, step: str, error: StepError) -> None:
        self.failures[step] = error

    def log_fields(self) -> dict:
        """Its fields in a log line: the cascade's id, and the guest's."""
        intent = self.intent
        return {"cascade": intent.id, "userId": intent.user_id, "socketId": intent.socket_id,
                "reason": intent.reason}


@dataclass
class Batch:
    claimed: list[Claimed]
    now: float  # Redis time of its claim
    deletes_open: int = 0  # its DELETEs handed to the stream, not yet answered and written back


def needing(batch: list[Claimed], step: str) -> list[Claimed]:
    """Those of ``batch`` still running with ``step`` left to do."""
    return [c for c in batch if c.active and step in c.intent.steps]


def read_intent(cascade_id: bytes, raw: bytes) -> Intent:
    """The intent stored under ``cascade_id``; ValueError when it cannot be run as it stands."""
    intent = Intent.from_json(raw)
    if intent.id != decode_name(cascade_id):
        raise ValueError(f"id {intent.id!r} differs from its field {cascade_id!r}")
    return intent
