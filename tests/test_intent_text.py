"""sweep/intent_text.py: the intent a sweep writes with a removal names exactly the steps left for
that id; an id that is no guest's gets no step a service or MongoDB would take."""

import json

import pytest

from reaper.sweep.intent_text import IntentText

SERVICES = ["auth", "user", "mongo"]
HOSTILE = ["guest_ok", "..", "cleanup-all", "guest_a/b", "guest_\x00", "registered_1", "", "guest_"]


@pytest.mark.parametrize("user_id", HOSTILE)
def test_with_the_services_off_and_the_entry_gone_there_is_nothing_to_write(user_id):
    assert IntentText([], 1.8e9, "guest_").of(user_id, "s1", "heartbeat_timeout", remove_entry=False) == ""


@pytest.mark.parametrize("user_id", HOSTILE)
def test_the_entry_step_is_kept_for_any_id_the_services_only_for_a_guest_id(user_id):
    texts = IntentText(SERVICES, 1.8e9, "guest_")
    guest = user_id == "guest_ok"

    with_entry = json.loads(texts.of(user_id, "s1", "heartbeat_timeout", remove_entry=True))
    without = texts.of(user_id, "s1", "heartbeat_timeout", remove_entry=False)

    assert with_entry["steps"] == ["online"] + (SERVICES if guest else [])
    assert (json.loads(without)["steps"] == SERVICES) if guest else without == ""
    assert IntentText.id_of(user_id, without) == ("guest:guest_ok" if guest else "")
