"""The salted filter (reaper/core/salted_filter.py) under the live users and the sockets a record
pass saw: nothing added is ever missed, few others are taken for added, and the bulk question
answers what the single one does."""

from reaper.core.salted_filter import SaltedFilter


def test_nothing_added_is_surely_not_in_and_most_of_the_rest_is():
    seen = SaltedFilter(50_000)
    added = [f"sock{n}" for n in range(50_000)]
    others = [f"sock-x{n}" for n in range(50_000)]
    seen.add_all(added)

    assert seen.surely_not_in(added) == []
    missing = seen.surely_not_in(others)
    assert len(missing) > len(others) * 0.99  # false positives near 0.07 %
    assert missing == [item for item in others if item not in seen]  # the same answers, in order


def test_each_filter_has_its_own_salt():
    """Overfilled (a million items in the smallest size), each gives a few % false positives:
    not the same ones."""
    a, b = SaltedFilter(0), SaltedFilter(0)
    items = [f"sock{n}" for n in range(1_000_000)]
    a.add_all(items)
    b.add_all(items)
    others = [f"other{n}" for n in range(20_000)]

    taken_by_a = set(others) - set(a.surely_not_in(others))
    taken_by_b = set(others) - set(b.surely_not_in(others))
    assert taken_by_a and taken_by_b and taken_by_a != taken_by_b


def test_odd_strings_are_items_like_any_other():
    seen = SaltedFilter(10)
    odd = ["", "..", "cleanup-all", "\x00\n\u2028", "\ud800", "😀" * 1000]
    seen.add_all(odd)

    assert seen.surely_not_in(odd) == [] and seen.count == len(odd)


def test_a_filter_whose_list_doubled_since_it_was_sized_still_rarely_says_maybe():
    """Sized by the last sweep, filled by this one: twice as many guests keep false positives
    near 0.5 % (docs/safety.md), and still none added is missed."""
    seen = SaltedFilter(300_000)
    added = [f"guest_{n:08x}" for n in range(600_000)]
    seen.add_all(added)
    others = [f"guest_{n:08x}" for n in range(600_000, 700_000)]

    assert seen.surely_not_in(added) == []
    assert len(others) - len(seen.surely_not_in(others)) < 1000  # under 1 %


def test_near_misses_of_an_added_string_are_surely_not_in():
    """Items go in paired with the filter's salt; what is asked is paired the same way."""
    seen = SaltedFilter(10)
    seen.add_all(["sock1"])
    assert "sock1" in seen and seen.count == 1
    assert seen.surely_not_in(["sock2", "", "sock1 "]) == ["sock2", "", "sock1 "]
