"""What a drain did, counted for its caller and said in one line at its end."""

from dataclasses import dataclass

from loguru import logger


@dataclass
class DrainReport:
    claimed: int = 0
    completed: int = 0
    retrying: int = 0
    deferred: int = 0  # waiting for a circuit, not charged an attempt
    dead: int = 0
    skipped_live: int = 0
    skipped_registered: int = 0
    not_a_guest_id: int = 0
    waiting: int = 0  # the gate could not tell yet whether the guest is live: after the next sweep
    held: int = 0  # left pending as they were: this replica lost the lease, or reaper is paused

    def say(self) -> None:
        """The drain's summary line, when it claimed or buried anything."""
        if not (self.claimed or self.dead):
            return
        logger.bind(counts={"claimed": self.claimed, "completed": self.completed, "retrying": self.retrying,
                            "dead": self.dead, "skipped_live": self.skipped_live,
                            "waiting_for_circuit": self.deferred, "waiting_for_next_sweep": self.waiting,
                            "held_back": self.held}).info(
            "Cascades: claimed={} completed={} retrying={} dead={} skipped_live={} waiting_for_circuit={}{}{}",
            self.claimed, self.completed, self.retrying, self.dead, self.skipped_live, self.deferred,
            f" waiting_for_next_sweep={self.waiting}" if self.waiting else "",
            f" held_back={self.held}" if self.held else "")
