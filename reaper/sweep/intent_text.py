"""The cascade intent a sweep writes with each removal, as the JSON the scripts store."""

from reaper.core.intents import guest_id, guest_intent
from reaper.sweep.judging import is_guest_id


class IntentText:
    def __init__(self, irreversible: list[str], now: float, guest_id_prefix: str):
        self.irreversible, self.now, self.prefix = irreversible, now, guest_id_prefix

    def of(self, user_id: str, socket_id: str | None, reason: str, remove_entry: bool) -> str:
        """The guest's intent as written; "" when it has no step left, and then none is written:
        the sweep leaves no cascade with nothing to do, and no removal without its intent while
        a step is left."""
        irreversible = self.irreversible  # none (the services off): nothing to ask of the id
        if irreversible and not is_guest_id(user_id, self.prefix):
            irreversible = []
        if not remove_entry and not irreversible:
            return ""
        return guest_intent(user_id, socket_id, reason, self.now, remove_entry, irreversible).to_json()

    @staticmethod
    def id_of(user_id: str, intent: str) -> str:
        """The cascade id an intent is written under; "" with no intent."""
        return guest_id(user_id) if intent else ""
