"""The pure decisions: stale or live (docs/design.md, staleness), mass expiry, retry delays, intents."""

import json
import random

import pytest

from reaper.core import intents

from reaper.core import reasons
from reaper.core.config import CascadeConfig, SafetyConfig, TimingConfig
from reaper.core.guard import allowance, is_mass_expiry
from reaper.core.intents import Intent, guest_intent, purge_intent
from reaper.core.retry import RetryPolicy
from reaper.core.staleness import Policy, future_problem, judge, missed_pings

NOW = 1_800_000_000.0
DEFAULTS = Policy(connection_timeout_s=180, ping_interval_s=60, max_missed_pings=3, clock_skew_s=5)
HB, PING, MALFORMED = reasons.HEARTBEAT_TIMEOUT, reasons.PING_TIMEOUT, reasons.MALFORMED
YEAR = 365 * 24 * 3600


def verdict(heartbeat_age, pong_age, policy=DEFAULTS):
    return judge(NOW - heartbeat_age, NOW - pong_age, NOW, policy)


# -- judge() ------------------------------------------------------------------------------


@pytest.mark.parametrize("heartbeat_age, pong_age, reason, missed", [
    (0, 0, None, 0),
    (30, 30, None, 0),
    # heartbeat timeout: stale when age > connection_timeout + clock_skew = 185 s
    (180, 0, None, 0),
    (185, 0, None, 0),
    (185.001, 0, HB, 0),
    (186, 0, HB, 0),
    (3600, 0, HB, 0),
    # ping timeout: floor((pong age - 5) / 60) missed; stale at 3
    (0, 4.999, None, 0),
    (0, 64.999, None, 0),
    (0, 65, None, 1),
    (0, 124.999, None, 1),
    (0, 125, None, 2),
    (0, 184.999, None, 2),
    (0, 185, PING, 3),
    (0, 245, PING, 4),
    # both: the heartbeat reason takes precedence
    (400, 400, HB, 6),
    (185.001, 185, HB, 3),
    (185, 185, PING, 3),
    # writer clock ahead of Redis: negative ages are live, up to max_future (5 min)
    (-30, -30, None, 0),
    (-300, -300, None, 0),
    (-30, 200, PING, 3),
    (200, -30, HB, 0),
    # further ahead, a record would stay live for ever: malformed
    (-300.001, -300.001, MALFORMED, 0),
    (-1e6, -1e6, MALFORMED, 0),
])
def test_judge_with_the_default_policy(heartbeat_age, pong_age, reason, missed):
    found = verdict(heartbeat_age, pong_age)

    assert found.reason == reason
    assert found.stale is (reason is not None)
    assert found.missed_pings == missed
    assert found.heartbeat_age_s == pytest.approx(heartbeat_age)


@pytest.mark.parametrize("policy, heartbeat_age, pong_age, reason, missed", [
    (Policy(180, 60, 3, 0), 180, 0, None, 0),
    (Policy(180, 60, 3, 0), 180.001, 0, HB, 0),
    (Policy(180, 60, 3, 0), 0, 179.999, None, 2),
    (Policy(180, 60, 3, 0), 0, 180, PING, 3),
    (Policy(30, 10, 1, 2), 0, 11.999, None, 0),
    (Policy(30, 10, 1, 2), 0, 12, PING, 1),
    (Policy(30, 10, 1, 2), 32, 0, None, 0),
    (Policy(30, 10, 1, 2), 32.001, 0, HB, 0),
    (Policy(180, 60, 3, 30), 210, 209.999, None, 2),
    (Policy(180, 60, 3, 30), 210.001, 0, HB, 0),
    (Policy(180, 60, 3, 30), 0, 210, PING, 3),
    (Policy(0.5, 0.1, 3, 0), 0, 0.3, PING, 3),
])
def test_judge_with_other_policies(policy, heartbeat_age, pong_age, reason, missed):
    found = verdict(heartbeat_age, pong_age, policy)
    assert (found.reason, found.missed_pings) == (reason, missed)


@pytest.mark.parametrize("pong_age, responsive", [
    (0, True), (64.999, True), (65, True), (124.999, True), (125, False), (185, False), (-10, True),
])
def test_responsive_means_fewer_than_two_missed_pings(pong_age, responsive):
    assert verdict(0, pong_age).responsive is responsive


@pytest.mark.parametrize("pong_age, missed", [
    (-100, 0), (0, 0), (5, 0), (64.999, 0), (65, 1), (125, 2), (605, 10), (3605, 60),
])
def test_missed_pings(pong_age, missed):
    assert missed_pings(NOW - pong_age, NOW, DEFAULTS) == missed


def test_policy_from_config_takes_the_timing_section():
    timing = TimingConfig(connection_timeout_s=120, ping_interval_s=20, max_missed_pings=4, clock_skew_s=1,
                          max_future_s=30)
    assert Policy.from_config(timing) == Policy(120, 20, 4, 1, 30)
    assert Policy.from_config(TimingConfig()) == DEFAULTS
    assert DEFAULTS.max_future_s == TimingConfig().max_future_s == 300


# -- far-future timestamps (docs/design.md, the data read: beyond now + max_future a record is malformed) ------------


@pytest.mark.parametrize("heartbeat_ahead, pong_ahead, reason", [
    (0, 0, None),
    (299.999, 299.999, None),
    (300, 300, None),  # exactly max_future ahead: still believed
    (300.001, 300.001, MALFORMED),
    (301, 0, MALFORMED),
    (YEAR, YEAR, MALFORMED),
    (99_999_999_999 - NOW, 99_999_999_999 - NOW, MALFORMED),  # epoch 99999999999: the year 5138
    (253402300799 - NOW, 0, MALFORMED),  # 9999-12-31T23:59:59Z
    # either timestamp alone: a pong far ahead keeps a record from ever ping-timing-out
    (0, 300.001, MALFORMED),
    (0, YEAR, MALFORMED),
    (-10, YEAR, MALFORMED),
    (YEAR, -10, MALFORMED),
    # and it is said even where the other timestamp makes the record stale
    (-3600, YEAR, MALFORMED),
    (YEAR, -3600, MALFORMED),
    (-3600, 300, HB),
    (300, -3600, PING),
])
def test_a_timestamp_beyond_max_future_is_malformed(heartbeat_ahead, pong_ahead, reason):
    found = judge(NOW + heartbeat_ahead, NOW + pong_ahead, NOW, DEFAULTS)

    assert found.reason == reason
    assert found.stale is (reason is not None)


@pytest.mark.parametrize("policy, heartbeat_ahead, pong_ahead, reason", [
    (Policy(180, 60, 3, 5, 0), 0, 0, None),
    (Policy(180, 60, 3, 5, 0), 0.001, 0, MALFORMED),  # 0: nothing ahead of Redis TIME
    (Policy(180, 60, 3, 5, 0), 0, 0.001, MALFORMED),
    (Policy(180, 60, 3, 0, 0), 0, 0.001, MALFORMED),
    (Policy(180, 60, 3, 30, 10), 10, 10, None),  # clock_skew widens ages, not leads
    (Policy(180, 60, 3, 30, 10), 10.001, 0, MALFORMED),
    (Policy(180, 60, 3, 30, 10), 0, 10.001, MALFORMED),
    (Policy(180, 60, 3, 5, 86400), 86400, 86400, None),
    (Policy(180, 60, 3, 5, 86400), 86400.001, 0, MALFORMED),
    (Policy(0.5, 0.1, 3, 0, 0.5), 0.5, 0.5, None),
    (Policy(0.5, 0.1, 3, 0, 0.5), 0.5, 0.501, MALFORMED),
])
def test_max_future_with_other_policies(policy, heartbeat_ahead, pong_ahead, reason):
    assert judge(NOW + heartbeat_ahead, NOW + pong_ahead, NOW, policy).reason == reason


@pytest.mark.parametrize("heartbeat_ahead, pong_ahead, words", [
    (YEAR, YEAR, "lastHeartbeat 31536000s ahead"),
    (YEAR, 0, "lastHeartbeat 31536000s ahead"),
    (-30, 3600, "lastPongReceived 3600s ahead"),
    (600, 3600, "lastPongReceived 3600s ahead"),
])
def test_future_problem_names_the_timestamp_furthest_ahead(heartbeat_ahead, pong_ahead, words):
    problem = future_problem(NOW + heartbeat_ahead, NOW + pong_ahead, NOW)
    assert problem.startswith("timestamp in the future: ") and words in problem


# -- mass-expiry guard --------------------------------------------------------------------


@pytest.mark.parametrize("safety, guests, stale, mass", [
    (SafetyConfig(), 0, 0, False),
    (SafetyConfig(), 49, 49, False),  # too few guests to call it a mass expiry
    (SafetyConfig(), 50, 25, False),  # exactly half is not more than half
    (SafetyConfig(), 50, 26, True),
    (SafetyConfig(), 50, 0, False),
    (SafetyConfig(), 100, 50, False),
    (SafetyConfig(), 100, 51, True),
    (SafetyConfig(), 10_000, 10_000, True),
    (SafetyConfig(max_reap_fraction=0.1, mass_expiry_min=10), 10, 1, False),
    (SafetyConfig(max_reap_fraction=0.1, mass_expiry_min=10), 10, 2, True),
    (SafetyConfig(max_reap_fraction=0.1, mass_expiry_min=10), 9, 9, False),
    (SafetyConfig(max_reap_fraction=1.0, mass_expiry_min=1), 10, 10, False),  # 1.0 disables it
])
def test_is_mass_expiry(safety, guests, stale, mass):
    assert is_mass_expiry(guests, stale, safety) is mass


@pytest.mark.parametrize("safety, force, expected", [
    (SafetyConfig(), False, 0),  # holds by default: nothing before the totals are known
    (SafetyConfig(), True, None),
    (SafetyConfig(mass_reap_per_sweep=7), False, 7),
    (SafetyConfig(mass_reap_per_sweep=7), True, None),
])
def test_allowance(safety, force, expected):
    assert allowance(safety, force) == expected


# -- retry delays -------------------------------------------------------------------------


@pytest.mark.parametrize("initial, maximum, attempt, ceiling", [
    (5, 600, 1, 5),
    (5, 600, 2, 10),
    (5, 600, 3, 20),
    (5, 600, 7, 320),
    (5, 600, 8, 600),  # 640 capped
    (5, 600, 50, 600),
    (5, 600, 10_000, 600),  # no float overflow after a day of fast retries
    (5, 600, 0, 5),
    (5, 600, -3, 5),
    (0.001, 0.001, 1_000_000, 0.001),
    (60, 30, 1, 30),  # max below initial: max wins
])
def test_retry_delay_is_between_half_and_all_of_the_ceiling(initial, maximum, attempt, ceiling):
    policy = RetryPolicy(float(initial), float(maximum))
    delays = [policy.delay(attempt, random.Random(seed)) for seed in range(200)]

    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert max(delays) - min(delays) > ceiling / 4  # the jitter is real


def test_retry_delay_is_reproducible_with_a_seeded_random():
    policy = RetryPolicy(5.0, 600.0)
    assert policy.delay(4, random.Random(7)) == policy.delay(4, random.Random(7))


def test_retry_delay_works_with_the_module_random():
    assert 2.5 <= RetryPolicy(5.0, 600.0).delay(1) <= 5


def test_retry_policy_from_config_and_repr():
    policy = RetryPolicy.from_config(CascadeConfig(retry_initial_s=2, retry_max_s=120))
    assert policy == RetryPolicy(2, 120)
    assert repr(policy) == "RetryPolicy(initial=2s, max=120s, x2 per failure, jitter 50%)"


# -- intents ------------------------------------------------------------------------------


def test_guest_intent_round_trips_through_json():
    intent = guest_intent("guest_1", "sock1", reasons.ORPHAN, NOW, remove_entry=True,
                          irreversible=[intents.AUTH, intents.MONGO])
    intent.attempts, intent.last_error = 2, "auth-service: HTTP 503"
    intent.errors = {"auth": "HTTP 503"}

    again = Intent.from_json(intent.to_json())

    assert again == intent
    assert again.id == "guest:guest_1"
    assert again.steps == ["online", "auth", "mongo"]
    assert Intent.from_json(intent.to_json().encode()) == intent


def test_intent_json_is_compact_and_sorted():
    text = purge_intent(reasons.STARTUP_PURGE, NOW, [intents.AUTH_ALL]).to_json()
    assert " " not in text
    assert list(json.loads(text)) == sorted(json.loads(text))


def test_intent_from_json_ignores_unknown_fields():
    data = json.loads(guest_intent("guest_1", None, reasons.MALFORMED, NOW, False, [intents.AUTH]).to_json())
    data["written_by"] = "a newer reaper"
    assert Intent.from_json(json.dumps(data)).user_id == "guest_1"


def test_purge_intent():
    intent = purge_intent(reasons.STARTUP_PURGE, NOW, [intents.AUTH_ALL, intents.USERS_ALL, intents.MONGO_ALL])
    assert intent.id == intents.PURGE_ID == "purge"
    assert intent.steps == ["auth_all", "users_all", "mongo_all"]
    assert intent.is_guest is False
    assert Intent.from_json(intent.to_json()) == intent


@pytest.mark.parametrize("intent, needs_check", [
    (guest_intent("g", "s", reasons.ORPHAN, NOW, True, []), False),
    (guest_intent("g", "s", reasons.ORPHAN, NOW, True, [intents.AUTH]), True),
    (guest_intent("g", "s", reasons.ORPHAN, NOW, False, [intents.MONGO]), True),
    (purge_intent(reasons.STARTUP_PURGE, NOW, [intents.AUTH_ALL, intents.MONGO_ALL]), False),
])
def test_needs_liveness_check_only_before_irreversible_guest_steps(intent, needs_check):
    assert intent.needs_liveness_check is needs_check


def test_one_cascade_id_per_user():
    first = guest_intent("guest_1", "old", reasons.HEARTBEAT_TIMEOUT, NOW, True, [intents.AUTH])
    second = guest_intent("guest_1", "new", reasons.ORPHAN, NOW, True, [intents.AUTH])
    assert first.id == second.id == intents.guest_id("guest_1")
