"""Tokens of the gate (reaper/safety/gate.py) for tests of the clients behind it: what the gate would
hand over after its checks, so a client's own behaviour can be tested alone."""

from reaper.safety import gate
from reaper.core.guest_ids import path_segment


def cleared(user_id: str) -> gate.Cleared:
    return gate.Cleared(user_id, path_segment(user_id), gate._MINT)


def permit(what: str, detail=None) -> gate.Permit:
    return gate.Permit(what, detail, gate._MINT)
