"""What a sweep says to the signaling cluster before it takes guests (docs/signaling.md): ask, then fence.

    ask    (notify.ask_before_reap) once per batch: which of these sockets does socket.io still
           hold? Those are kept, whatever their records say. An incomplete answer (a timeout,
           fewer answers than servers) leaves the batch to the Redis evidence, and the sweep
           asks no more: one slow server must not cost every batch the full ask_timeout.
    fence  (notify.enabled and notify.fence) once per batch, right before the removals:
           disconnect the sockets about to be reaped, wherever they are. Never in a dry run.

The sweep holds its ``turn`` around each call, as around any Redis call of its own.
"""

import redis
from loguru import logger

from reaper.core.config import Config
from reaper.safety.gate import Gate
from reaper.signaling.servers import SignalingCluster

LOUD_KEPT = 20  # guests kept as attached logged at WARNING per sweep; the rest at DEBUG


class SweepNotify:
    """One sweep's ask and fence. Shared by the sweep's first pass and its second look."""

    def __init__(self, tier: SignalingCluster, asking: bool, fencing: bool, gate: Gate | None = None):
        self.tier, self.asking, self.fencing, self.gate = tier, asking, fencing, gate
        self.kept = 0

    @classmethod
    def of(cls, client: redis.Redis, config: Config, gate: Gate | None = None) -> "SweepNotify | None":
        """None when the configuration asks nothing of a sweep: then it costs nothing. Without a
        gate nothing is fenced: every fence passes it."""
        notify = config.notify
        fencing = notify.enabled and notify.fence and not config.safety.dry_run and gate is not None
        if not (notify.ask_before_reap or fencing):
            return None
        return cls(SignalingCluster(client, notify), notify.ask_before_reap, fencing, gate)

    def attached(self, socket_ids: list[str]) -> set[str]:
        """The sockets among these that some server still holds. Empty when not asking, when
        nobody is asked, and when nobody answered in time (then: the Redis evidence)."""
        if not self.asking or not socket_ids:
            return set()
        answer = self.tier.ask(socket_ids)
        if not answer.complete:
            self.asking = False
            logger.warning("Sweep: the signaling cluster's answer is incomplete ({}); {} guests are "
                           "judged by their Redis records alone, and the sweep asks no more",
                           answer.why, len(socket_ids) - len(answer.attached))
        return set(answer.attached)

    def keep(self, user_id: str, socket_id: str, reason: str) -> None:
        """A guest that looks dead in Redis, but whose socket is attached: socket.io's view wins."""
        self.kept += 1
        logger.log("WARNING" if self.kept <= LOUD_KEPT else "DEBUG",
                   "Sweep: {} (socket {}) looks dead in Redis ({}) but its socket is still attached: "
                   "kept (a frozen app, or a writer that stopped refreshing records)",
                   user_id, socket_id, reason)

    def fence(self, doomed: list[tuple[str, str | None]], now: float) -> None:
        """Disconnect the sockets of these (socketId, userId) that the gate lets go, before their
        records go. A Redis error stops the sweep, as any other would: no guest's records are
        removed without its fence."""
        permit = self.gate.fence(doomed, now) if self.fencing and doomed else None
        if permit is not None:
            servers = self.tier.fence(permit)
            logger.info("Notify: fenced {} socket(s) before their records go (the request reached {} "
                        "server(s))", len(permit.detail), servers)
