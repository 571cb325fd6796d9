"""`reaper demo`'s pure parts: the scenario, reading the reaper's log, the view and the verdict."""

import io
import json
import random
from collections import Counter

import pytest

from reaper.core.config import load_config
from reaper.demo.events import Decision, Journal, Notice, Stats, Summary, parse_line
from reaper.demo.process import reaper_environ
from reaper.demo.signaling import (DROPPED, FROZEN, KILLED, KINDS, LEFTOVER, LIVE, MALFORMED, Guest, Scenario,
                                   entry, plan, preset_record, record)
from reaper.demo.summary import Facts, judge, render
from reaper.demo.timings import Timings
from reaper.demo.view import Screen, Snapshot, guest_state, render_decision, render_line, render_screen
from reaper.core.records import parse_online_entry
from reaper.core.staleness import Policy, judge as judge_staleness

T = Timings()


def log_line(message: str, level: str = "INFO", **extra) -> str:
    return json.dumps({"time": "2026-11-29T20:20:11.512345+00:00", "level": level, "message": message,
                       "logger": "reaper.sweep.sweep", **extra})


# -- the scenario ----------------------------------------------------------------------------

@pytest.mark.parametrize("duration", [5, 20, 300])
def test_the_plan_has_every_kind_and_stays_below_the_mass_expiry_guard(duration):
    scenario = plan(duration, T, random.Random(duration))
    kinds = Counter(g.kind for g in scenario.guests)
    assert set(kinds) == set(KINDS)
    defaults = load_config(None, {}).safety
    assert len(scenario.guests) < defaults.mass_expiry_min  # so the demo shows normal reaping
    ids = [g.user_id for g in scenario.guests]
    sockets = [g.socket_id for g in scenario.guests]
    assert len(set(ids)) == len(ids) and len(set(sockets)) == len(sockets)
    assert all(u.startswith("guest_") for u in ids)
    assert not any(u.startswith("guest_") for u in scenario.registered)


@pytest.mark.parametrize("duration", [5, 20, 300])
def test_every_death_and_late_join_happens_early_enough_to_be_seen(duration):
    scenario = plan(duration, T, random.Random(7))
    for guest in scenario.guests:
        assert 0 <= guest.join_at <= 0.6 * duration
        if guest.kind in (DROPPED, KILLED, FROZEN):
            assert 0.15 * duration <= guest.stop_at + 0.05 and guest.stop_at <= 0.55 * duration + 0.05
        else:
            assert guest.stop_at is None
    assert all(not g.dies for g in scenario.of_kind(LIVE)) and all(g.dies for g in scenario.guests if g.kind != LIVE)


def test_alive_at_follows_the_schedule_and_leftovers_are_never_alive():
    dropped = Guest(DROPPED, "guest_1", "s1", stop_at=3.0)
    assert dropped.alive_at(2.9) and not dropped.alive_at(3.0)
    assert Guest(LIVE, "guest_2", "s2").alive_at(1e9)
    assert not Guest(LEFTOVER, "guest_3", "s3").alive_at(0)
    assert not Guest(MALFORMED, "guest_4", "s4").alive_at(0)


def test_records_and_entries_are_what_the_signaling_service_writes():
    guest = Guest(LIVE, "guest_6f1c2a9e", "Qx7b2M1dZk_AAAB")
    data = record(guest, 1_700_000_000.0, 1_700_000_030.5, 1_700_000_030.25)
    assert data["lastHeartbeat"] == "2023-11-14T22:13:50.500Z"
    assert data["lastPongReceived"] == "2023-11-14T22:13:50.250Z"
    assert data["missedPings"] == 0 and data["socketId"] == guest.socket_id
    parsed = parse_online_entry(guest.user_id, entry(guest).encode(), "guest_")
    assert parsed.is_guest and parsed.socket_id == guest.socket_id


def test_the_preset_records_are_old_or_malformed_as_intended():
    now = 1_700_000_000.0
    assert not preset_record(Guest(MALFORMED, "guest_a", "s", preset="not json"), now).startswith("{")
    no_heartbeat = json.loads(preset_record(Guest(MALFORMED, "guest_b", "s", preset="no heartbeat"), now))
    assert "lastHeartbeat" not in no_heartbeat and no_heartbeat["userId"] == "guest_b"
    old = json.loads(preset_record(Guest(LEFTOVER, "guest_c", "s", preset="old"), now))
    assert old["lastHeartbeat"] == "2023-11-14T22:12:20.000Z"  # a minute before now


# -- the timings -----------------------------------------------------------------------------

def test_the_timings_are_a_valid_reaper_configuration():
    timing = load_config(None, T.as_env()).timing
    assert (timing.heartbeat_interval_s, timing.connection_timeout_s, timing.ping_interval_s) == (1.0, 6.0, 2.0)
    assert (timing.max_missed_pings, timing.clock_skew_s, timing.cascade_interval_s) == (3, 0.5, 0.5)
    assert timing.cleanup_interval_s == 5.0


def test_stale_after_is_where_the_reaper_starts_judging_a_silent_guest_stale():
    policy = Policy.from_config(load_config(None, T.as_env()).timing)
    now = 1_000.0
    just_before, just_after = now - T.stale_after_s + 0.01, now - T.stale_after_s - 0.01
    assert not judge_staleness(just_before, just_before, now, policy).stale
    assert judge_staleness(just_after, just_after, now, policy).stale
    frozen = judge_staleness(now, just_after, now, policy)  # heartbeats on, pongs stopped
    assert frozen.reason == "ping_timeout"
    assert T.settle_s > T.stale_after_s + T.heartbeat_interval_s


def test_the_reaper_environment_drops_the_machines_settings_and_is_a_valid_configuration(tmp_path):
    inherited = {"PATH": "/usr/bin", "REAPER_REDIS_URL": "redis://prod:6379/0", "REDIS_HOST": "prod",
                 "REDIS_PASSWORD": "s3cret", "REAPER_SAFETY_DRY_RUN": "true"}
    env = reaper_environ(inherited, tmp_path / "empty.toml", "redis://127.0.0.1:5/0", "http://127.0.0.1:6",
                         "http://127.0.0.1:7", "127.0.0.1:8", T)
    assert env["PATH"] == "/usr/bin" and "REDIS_HOST" not in env and "REDIS_PASSWORD" not in env
    assert env["REAPER_REDIS_URL"] == "redis://127.0.0.1:5/0" and "REAPER_SAFETY_DRY_RUN" not in env
    (tmp_path / "empty.toml").write_text("")
    config = load_config(None, env)
    assert config.source == str(tmp_path / "empty.toml")
    assert config.mongo.uri == "" and config.log.format == "json" and config.server.listen == "127.0.0.1:8"
    assert config.startup.purge == "cold"  # the simulated server subscribes, so "cold" means a sweep


# -- reading the reaper's log ----------------------------------------------------------------

@pytest.mark.parametrize("message, expected", [
    ("Reaped guest_6f1c2a9e (socket Qx7b2M1dZk_AAAB): orphan, no record",
     Decision("guest_6f1c2a9e", "Qx7b2M1dZk_AAAB", "orphan", "no record", "2026-11-29T20:20:11.512345+00:00")),
    ("Reaped guest_1 (socket -): heartbeat_timeout, heartbeat age 60s, missed pings 29",
     Decision("guest_1", "-", "heartbeat_timeout", "heartbeat age 60s, missed pings 29",
              "2026-11-29T20:20:11.512345+00:00")),
    ("Reaped guest_2 (socket s): malformed",
     Decision("guest_2", "s", "malformed", "", "2026-11-29T20:20:11.512345+00:00")),
    ("Sweep: scanned=14 stale=1 orphans=0 reaped=1 skipped_live=0 malformed=0 duration=0.004s",
     Summary("sweep", {"scanned": "14", "stale": "1", "orphans": "0", "reaped": "1", "skipped_live": "0",
                       "malformed": "0", "duration": "0.004s"})),
    ("Cascades: claimed=3 completed=3 retrying=0 dead=0 skipped_live=0 waiting_for_circuit=0",
     Summary("cascades", {"claimed": "3", "completed": "3", "retrying": "0", "dead": "0", "skipped_live": "0",
                          "waiting_for_circuit": "0"})),
    ("Connection Stats - Total: 12, Responsive: 11, Unresponsive: 1 | reaped since start: orphan=3",
     Stats(12, 11, 1)),
    ("Startup: purge=cold: 1 signaling server(s) subscribe socket.io-request#/#, so ...",
     Notice("INFO", "Startup: purge=cold: 1 signaling server(s) subscribe socket.io-request#/#, so ...")),
    ("Run: sweeping every 1s, cleanup every 5s", None),
    ("Reaped by hand", None),
])
def test_log_lines_become_events(message, expected):
    assert parse_line(log_line(message)) == expected


def test_warnings_and_errors_are_notices_and_lines_that_are_not_json_too():
    assert parse_line(log_line("Sweep: mass expiry: ...", "WARNING")) == Notice("WARNING", "Sweep: mass expiry: ...")
    assert parse_line(log_line("Cascade: x moved to dead letters", "ERROR")).level == "ERROR"
    assert parse_line("Traceback (most recent call last):") == Notice("RAW", "Traceback (most recent call last):")
    assert parse_line('["a JSON array"]') == Notice("RAW", '["a JSON array"]')
    assert parse_line('{"message": 5}') == Notice("RAW", '{"message": 5}')
    assert parse_line("   \n") is None


def test_the_journal_counts_reaped_by_reason_and_sweeps():
    journal = Journal()
    for message in ("Reaped guest_1 (socket a): orphan, no record",
                    "Sweep: scanned=2 stale=0 orphans=1 reaped=1 skipped_live=0 malformed=0 duration=0.001s",
                    "Reaped guest_2 (socket b): ping_timeout, heartbeat age 0s, missed pings 3",
                    "Reaped guest_3 (socket c): orphan, no record",
                    "Sweep: scanned=1 stale=1 orphans=1 reaped=2 skipped_live=0 malformed=0 duration=0.002s",
                    "Connection Stats - Total: 1, Responsive: 1, Unresponsive: 0"):
        journal.add(parse_line(log_line(message)))
    journal.add(parse_line(log_line("Circuit: auth-service open after 5 failures", "WARNING")))
    journal.add(None)

    assert journal.reaped == Counter(orphan=2, ping_timeout=1)
    assert journal.sweeps == 2 and journal.last_sweep["reaped"] == "2"
    assert journal.reaped_users() == {"guest_1", "guest_2", "guest_3"}
    assert journal.stats == Stats(1, 1, 0)
    assert journal.problems == 1 and journal.notices[-1].level == "WARNING"


# -- the view --------------------------------------------------------------------------------

@pytest.mark.parametrize("joined, alive, present, state", [
    (False, True, False, "joining"),
    (True, True, True, "live"),
    (True, True, False, "touched"),
    (True, False, True, "dying"),
    (True, False, False, "reaped"),
])
def test_guest_state(joined, alive, present, state):
    assert guest_state(joined, alive, present) == state


def snapshot(**changes) -> Snapshot:
    decisions = tuple(Decision(f"guest_{n}", f"sock{n}", "orphan", "no record", "2026-11-29T20:20:1%d.000Z" % n)
                      for n in range(10))
    values = dict(elapsed_s=12.34, duration_s=20, phase="running", states=Counter(live=8, dying=3, reaped=9),
                  registered=3, reaped=Counter(orphan=6, heartbeat_timeout=2, ping_timeout=1),
                  pending=2, dead_letters=0, sweeps=13,
                  last_sweep={"scanned": "14", "reaped": "1", "duration": "0.004s", "extra": "x"},
                  decisions=decisions, notices=(Notice("WARNING", "Sweep: mass expiry: 60 of 100"),),
                  stats=Stats(12, 11, 1), endpoints={"redis": "redis://127.0.0.1:5/0",
                                                     "metrics": "http://127.0.0.1:9/metrics"})
    values.update(changes)
    return Snapshot(**values)


def test_the_screen_shows_guests_reasons_cascades_decisions_and_warnings():
    screen = render_screen(snapshot())
    lines = screen.splitlines()
    assert lines[0].endswith("running  12.3s / 20s")
    assert "metrics http://127.0.0.1:9/metrics" in lines[1]
    assert "Guests    live 8   dying 3   reaped 9   registered users 3" in screen
    assert "Reaped    orphan 6   heartbeat_timeout 2   ping_timeout 1" in screen
    assert "Cascades  pending 2   dead letters 0" in screen
    assert "Sweeps    13   scanned=14 reaped=1 duration=0.004s" in screen  # known fields only
    assert "Stats     Total: 12, Responsive: 11, Unresponsive: 1" in screen
    decisions = lines[lines.index("Last decisions") + 1:lines.index("The reaper said") - 1]
    assert len(decisions) == 8 and "guest_9" in decisions[-1] and "guest_2" in decisions[0]
    assert "  WARNING Sweep: mass expiry: 60 of 100" in screen
    assert screen.endswith("Ctrl-C stops the demo and cleans up.\n")


def test_the_screen_before_anything_happened():
    screen = render_screen(snapshot(reaped=Counter(), decisions=(), notices=(), stats=None, pending=None,
                                    states=Counter(joining=2), sweeps=0, last_sweep={}))
    assert "Reaped    nobody yet" in screen and "Last decisions\n  none yet" in screen
    assert "pending ?" in screen and "Stats" not in screen and "The reaper said" not in screen


def test_the_plain_line_and_a_decision():
    assert render_line(snapshot()) == ("[ 12.3s] guests live=8 dying=3 reaped=9 | reaped orphan=6 "
                                       "heartbeat_timeout=2 ping_timeout=1 | cascades pending=2 | sweeps=13")
    assert render_decision(Decision("guest_1", "s1", "orphan", "no record", "2026-11-29T20:20:11.512Z")) == \
        "20:20:11 guest_1          orphan            socket s1  no record"
    assert render_decision(Decision("guest_1", "s1", "malformed", "", "")) == \
        "guest_1          malformed         socket s1"
    assert "reaped none" in render_line(snapshot(reaped=Counter()))


def test_plain_output_prints_each_decision_and_notice_once_and_a_line_every_two_seconds():
    out = io.StringIO()
    screen = Screen(out, live=False)
    first = snapshot(elapsed_s=1.0, decisions=snapshot().decisions[:2])
    screen.show(first)
    screen.show(snapshot(elapsed_s=1.5, decisions=snapshot().decisions[:3]))
    screen.show(snapshot(elapsed_s=3.1, decisions=snapshot().decisions[:3]))
    lines = out.getvalue().splitlines()
    assert [line.split()[2] for line in lines if line.startswith("  reaped ")] == ["guest_0", "guest_1", "guest_2"]
    assert sum(line.startswith("[") for line in lines) == 2  # at 1.0 s and 3.1 s
    assert lines.count("  reaper: WARNING Sweep: mass expiry: 60 of 100") == 1
    assert "\x1b" not in out.getvalue()


def test_a_terminal_gets_the_screen_redrawn_and_the_cursor_back():
    out = io.StringIO()
    screen = Screen(out, live=True)
    screen.say("not shown on a terminal")
    screen.show(snapshot())
    screen.close()
    text = out.getvalue()
    assert text.startswith("\x1b[?25l\x1b[H\x1b[2J") and text.endswith("\x1b[?25h")
    assert render_screen(snapshot()) in text and "not shown" not in text


# -- the verdict -----------------------------------------------------------------------------

def small_scenario() -> Scenario:
    guests = [Guest(LIVE, "guest_live", "s1"), Guest(DROPPED, "guest_dropped", "s2", stop_at=1.0),
              Guest(LEFTOVER, "guest_left", "s3")]
    return Scenario(guests, {"user_alice": '{"userId": "user_alice"}'})


def facts(**changes) -> Facts:
    values = dict(scenario=small_scenario(),
                  present={"guest_live": True, "guest_dropped": False, "guest_left": False},
                  registered_now={"user_alice": '{"userId": "user_alice"}'}, touched=set(),
                  deletes=Counter(guest_dropped=1, guest_left=1), reaped=Counter(orphan=2),
                  logged={"guest_dropped", "guest_left"}, pending=0, dead_letters=0, reaper_exit=0, cleanups=2)
    values.update(changes)
    return Facts(**values)


def test_all_dead_reaped_and_nobody_else_touched_passes():
    outcome = judge(facts())
    assert outcome.ok and outcome.problems == []
    text = render(outcome, 21.04, 20)
    assert text.splitlines()[0] == "reaper demo: summary after 21.0s, 20 sweeps"
    assert "  guests created        3: live 1, dropped 1, leftover 1" in text
    assert "  dead guests reaped    2/2 " in text and "  live untouched        1/1" in text
    assert "  registered untouched  1/1" in text and "  pending cascades      0 (dead letters 0)" in text
    assert text.endswith("PASS: every dead guest was reaped; no live guest or registered user was touched.")


@pytest.mark.parametrize("changes, problem", [
    ({"present": {"guest_live": True, "guest_dropped": True, "guest_left": False}},
     "dead guests not reaped everywhere: guest_dropped"),
    ({"deletes": Counter(guest_dropped=1)}, "dead guests not reaped everywhere: guest_left"),
    ({"present": {"guest_live": False, "guest_dropped": False, "guest_left": False}},
     "guests touched while alive: guest_live"),
    ({"touched": {"guest_live"}}, "guests touched while alive: guest_live"),
    ({"touched": {"guest_dropped"}}, "guests touched while alive: guest_dropped"),
    ({"deletes": Counter(guest_dropped=1, guest_left=1, guest_live=1)}, "guests touched while alive: guest_live"),
    ({"logged": {"guest_live"}}, "guests touched while alive: guest_live"),
    ({"registered_now": {"user_alice": None}}, "REGISTERED users touched: user_alice"),
    ({"deletes": Counter(guest_dropped=1, guest_left=1, user_alice=1)}, "REGISTERED users touched: user_alice"),
    ({"pending": 1}, "cascades left: pending 1, dead letters 0"),
    ({"dead_letters": 2}, "cascades left: pending 0, dead letters 2"),
    ({"pending": None}, "cascades left: pending ?"),
    ({"reaper_exit": 1}, "`reaper run` exited with 1, not 0"),
    ({"reaper_exit": None}, "`reaper run` exited with ?, not 0"),
])
def test_anything_wrong_fails_and_says_what(changes, problem):
    outcome = judge(facts(**changes))
    assert not outcome.ok
    text = render(outcome, 20, 20)
    assert f"FAIL: {problem}" in text and "PASS" not in text


def test_a_touched_live_guest_is_counted_out_of_the_live_ones():
    outcome = judge(facts(touched={"guest_live", "guest_dropped"}))
    assert outcome.live_untouched == 0 and outcome.live_total == 1
    assert "  live untouched        0/1" in render(outcome, 20, 20)
