"""Timestamps shaped as JavaScript's toISOString writes them are read from a remembered second's
start (reaper/core/records.py, _offset_iso): always exactly what reading the whole text gives,
bit for bit, cold or warm, for every odd text that shares a remembered second's first 19
characters; and the memory of seconds stays bounded. Pure."""

import random
from datetime import datetime, timedelta, timezone

import pytest

from reaper.core import records

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def js(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def both_ways(text: str) -> tuple:
    """(whole text, cold, warm): the cache emptied first, then read twice."""
    records._second_starts.clear()
    return records._any_offset_iso(text), records._offset_iso(text), records._offset_iso(text)


def same(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and a.hex() == b.hex())


RANDOM = random.Random(20261207)
MOMENTS = [EPOCH + timedelta(milliseconds=RANDOM.randrange(0, 253_402_300_799_999)) for _ in range(3000)]
EDGES = ["1970-01-01T00:00:00.000Z", "1970-01-01T00:00:00.999Z", "1969-12-31T23:59:59.999Z",
         "9999-12-31T23:59:58.999Z", "9999-12-31T23:59:59.000Z", "9999-12-31T23:59:59.001Z",
         "0001-01-01T00:00:00.000Z", "2026-02-29T10:00:00.000Z", "2024-02-29T10:00:00.500Z",
         "2026-12-07T24:00:00.000Z", "2026-12-07T23:59:60.000Z", "2026-13-07T10:00:00.000Z",
         "2026-12-07t10:00:00.000z", "2026-12-07 10:00:00.000Z", "2026-12-07T10:00:00,123Z",
         "2026-12-07T10:00:00.123+00:00", "2026-12-07T10:00:00.1234Z", "2026-12-07T10:00:00.12Z",
         "2026-W49-1T10:00:00.000Z", "+2026-12-07T10:00:00.00Z", "2026-12-07T10:00:00.123Z\n",
         "２０２６-12-07T10:00:00.123Z", "2026-12-07T10:00:00.١٢٣Z", "2026-12-07T10:00:00.1²3Z"]


def test_a_remembered_second_gives_exactly_what_the_whole_text_gives():
    """3000 random milliseconds of 1970..9999, and the edges: in range or not, no date, no
    second, other shapes, other digits than ASCII's."""
    for text in [js(m) for m in MOMENTS] + EDGES:
        whole, cold, warm = both_ways(text)
        assert same(cold, whole) and same(warm, whole), text


@pytest.mark.parametrize("millis", ["000", "999", "0a1", "١٢٣", "²³¹", "-01", "+01", " 12", "12 ", "1_2",
                                    "\x0012", "12", "1234", "", "1e2"])
def test_any_ending_after_a_remembered_second_gives_what_the_whole_text_gives(millis):
    records._second_starts.clear()
    records._offset_iso("2026-12-07T10:00:00.500Z")  # remembered
    assert "2026-12-07T10:00:00" in records._second_starts
    for ending in (f".{millis}Z", f"{millis}Z", f".{millis}z", f".{millis}"):
        text = "2026-12-07T10:00:00" + ending
        assert same(records._offset_iso(text), records._any_offset_iso(text)), text


def test_a_second_without_every_millisecond_in_range_is_not_remembered():
    records._second_starts.clear()
    assert records._offset_iso("9999-12-31T23:59:59.000Z") == records._any_offset_iso("9999-12-31T23:59:59.000Z")
    assert records._second_starts == {}
    assert records._offset_iso("9999-12-31T23:59:59.001Z") is None


def test_the_remembered_seconds_stay_bounded():
    records._second_starts.clear()
    start = datetime(2026, 12, 7, tzinfo=timezone.utc)
    for n in range(3 * records._MAX_SECONDS_KEPT):  # records spread over hours: one second each
        text = js(start + timedelta(seconds=n, milliseconds=n % 1000))
        assert same(records._offset_iso(text), records._any_offset_iso(text))
        assert len(records._second_starts) <= records._MAX_SECONDS_KEPT
