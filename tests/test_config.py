"""Configuration (docs/configuration.md): defaults, lookup order, precedence, durations, every bad input."""

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest

from reaper.core import config as config_module
from reaper.core.config import Config, as_masked_dict, load_config, mask_url, secrets_of
from reaper.core.durations import format_duration, parse_duration
from support.config_errors import config_error

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


@pytest.fixture(autouse=True)
def empty_cwd(tmp_path, monkeypatch):
    """No ./reaper.toml unless a test writes one."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def load_toml(tmp_path, text: str, environ=None, overrides=None) -> Config:
    return load_config(write(tmp_path / "reaper.conf.toml", text), environ or {}, overrides)


# -- defaults and lookup ------------------------------------------------------------------


def test_defaults_when_no_file_and_no_environment():
    loaded = load_config(None, {})

    assert loaded.source == "defaults"
    assert loaded.redis.url == "redis://localhost:6379/0"  # REDIS_HOST / REDIS_PORT defaults
    assert dataclasses.replace(loaded, redis=Config().redis, source="defaults") == Config()
    assert loaded.timing.heartbeat_interval_s == 30
    assert loaded.timing.cleanup_interval_s == 300
    assert loaded.timing.connection_timeout_s == 180
    assert loaded.timing.ping_interval_s == 60
    assert loaded.timing.max_missed_pings == 3
    assert loaded.timing.retention_s == 86400
    assert loaded.timing.clock_skew_s == 5
    assert loaded.timing.max_future_s == 300
    assert loaded.startup.purge == "cold"
    assert loaded.auth_service.base_url == "http://auth-service:3001"
    assert loaded.user_service.base_url == "http://user-service:3002"
    assert loaded.auth_service.timeout_s == 5 and loaded.auth_service.token == ""
    assert loaded.mongo.uri == "" and loaded.mongo.guest_filter == {"isGuest": True}
    assert (loaded.mongo.database, loaded.mongo.collection, loaded.mongo.id_field,
            loaded.mongo.created_field) == ("voip", "users", "userId", "createdAt")
    assert loaded.safety == config_module.SafetyConfig(False, 0.5, 50, 0, 86400)
    assert loaded.safety.mass_reap_per_sweep == 0  # a mass expiry holds every guest (docs/design.md, the cascade)
    assert (loaded.log.level, loaded.log.format) == ("INFO", "text")
    assert loaded.server.listen == ""
    assert loaded.notify.enabled is False and loaded.notify.channel_prefix == "socket.io"
    assert (loaded.redis.connection_prefix, loaded.redis.session_prefix, loaded.redis.online_key,
            loaded.redis.guest_id_prefix, loaded.redis.record_format, loaded.redis.reaper_prefix) == (
        "guest_connection:", "guest_session:", "users:online", "guest_", "json", "reaper:")


def test_the_default_files_are_the_local_one_then_etc():
    assert config_module.DEFAULT_PATHS == (Path("reaper.toml"), Path("/etc/reaper/reaper.toml"))


@pytest.mark.parametrize("present, expected", [
    ({"flag", "env", "local"}, "flag"),
    ({"env", "local"}, "env"),
    ({"local"}, "local"),
    ({"flag", "local"}, "flag"),
])
def test_file_lookup_order(tmp_path, empty_cwd, present, expected):
    files = {
        "flag": tmp_path / "flag.toml",
        "env": tmp_path / "env.toml",
        "local": empty_cwd / "reaper.toml",
    }
    purge_of = {"flag": "all", "env": "stale", "local": "off"}
    for name in present:
        write(files[name], f'[startup]\npurge = "{purge_of[name]}"\n')
    flag = files["flag"] if "flag" in present else None
    environ = {"REAPER_CONFIG": str(files["env"])} if "env" in present else {}

    loaded = load_config(flag, environ)

    assert loaded.startup.purge == purge_of[expected]
    assert Path(loaded.source).resolve() == files[expected].resolve()


def test_the_etc_file_is_read_after_the_local_one(tmp_path, empty_cwd, monkeypatch):
    # The real /etc path is not touched: the second default is redirected to a scratch file.
    etc = write(tmp_path / "etc-reaper.toml", '[startup]\npurge = "stale"\n')
    monkeypatch.setattr(config_module, "DEFAULT_PATHS", (Path("reaper.toml"), etc))

    assert load_config(None, {}).startup.purge == "stale"
    write(empty_cwd / "reaper.toml", '[startup]\npurge = "off"\n')
    assert load_config(None, {}).startup.purge == "off"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_missing_named_config_file_is_an_error(tmp_path, how):
    missing = tmp_path / "nowhere.toml"
    flag, environ = (missing, {}) if how == "flag" else (None, {"REAPER_CONFIG": str(missing)})

    error = config_error(lambda: load_config(flag, environ))

    assert error.key == ("--config" if how == "flag" else "REAPER_CONFIG")
    assert error.value == str(missing)
    assert "nowhere.toml" in str(error) and "TOML file" in str(error)


def test_a_directory_given_as_config_file_is_an_error(tmp_path):
    error = config_error(lambda: load_config(tmp_path, {}))
    assert error.key == "--config"


# -- precedence ---------------------------------------------------------------------------


FILE = """
[startup]
purge = "all"
[safety]
dry_run = false
mass_expiry_min = 10
[timing]
connection_timeout = "2m"
"""


def test_environment_beats_the_file(tmp_path):
    loaded = load_toml(tmp_path, FILE, {"REAPER_STARTUP_PURGE": "stale",
                                        "REAPER_TIMING_CONNECTION_TIMEOUT": "90s"})

    assert loaded.startup.purge == "stale"
    assert loaded.timing.connection_timeout_s == 90
    assert loaded.safety.mass_expiry_min == 10  # from the file, nothing overrode it


def test_command_line_beats_the_environment(tmp_path):
    loaded = load_toml(tmp_path, FILE, {"REAPER_SAFETY_DRY_RUN": "false", "REAPER_STARTUP_PURGE": "stale"},
                       {"safety.dry_run": True, "startup.purge": "off"})

    assert loaded.safety.dry_run is True
    assert loaded.startup.purge == "off"


def test_environment_names_cover_every_key():
    for section in config_module.SECTIONS:
        for key in config_module._keys(section):
            name = f"REAPER_{section}_{key}".upper()
            assert name in _all_env_names(), name


def _all_env_names():
    return {config_module._env_name(s, k) for s in config_module.SECTIONS for k in config_module._keys(s)}


@pytest.mark.parametrize("name, raw, attribute, expected", [
    ("REAPER_SAFETY_DRY_RUN", "true", ("safety", "dry_run"), True),
    ("REAPER_SAFETY_DRY_RUN", "0", ("safety", "dry_run"), False),
    ("REAPER_SAFETY_DRY_RUN", "off", ("safety", "dry_run"), False),
    ("REAPER_SAFETY_MASS_EXPIRY_MIN", " 7 ", ("safety", "mass_expiry_min"), 7),
    ("REAPER_SAFETY_MAX_REAP_FRACTION", "0.25", ("safety", "max_reap_fraction"), 0.25),
    ("REAPER_LOG_LEVEL", "debug", ("log", "level"), "DEBUG"),
    ("REAPER_MONGO_GUEST_FILTER", '{"kind": "guest"}', ("mongo", "guest_filter"), {"kind": "guest"}),
    ("REAPER_AUTH_SERVICE_BASE_URL", "http://auth:3001/", ("auth_service", "base_url"), "http://auth:3001"),
    ("REAPER_AUTH_SERVICE_BASE_URL", "", ("auth_service", "base_url"), ""),
    ("REAPER_SERVER_LISTEN", "127.0.0.1:9108", ("server", "listen"), "127.0.0.1:9108"),
    ("REAPER_SERVER_LISTEN", "[::1]:9108", ("server", "listen"), "[::1]:9108"),
    ("REAPER_REDIS_RECORD_FORMAT", "hash", ("redis", "record_format"), "hash"),
])
def test_environment_values_are_converted_by_the_key_kind(name, raw, attribute, expected):
    loaded = load_config(None, {name: raw})
    section, key = attribute
    assert getattr(getattr(loaded, section), key) == expected


# -- the signaling service's REDIS_* variables ---------------------------------------------


@pytest.mark.parametrize("environ, url", [
    ({"REDIS_HOST": "redis", "REDIS_PORT": "6380"}, "redis://redis:6380/0"),
    ({"REDIS_HOST": "redis"}, "redis://redis:6379/0"),
    ({"REDIS_PORT": "7000"}, "redis://localhost:7000/0"),
    ({"REDIS_HOST": "", "REDIS_PORT": "", "REDIS_PASSWORD": ""}, "redis://localhost:6379/0"),
    ({"REDIS_HOST": "redis", "REDIS_PASSWORD": "pw"}, "redis://:pw@redis:6379/0"),
    ({"REDIS_HOST": "redis", "REDIS_PASSWORD": "p@ss w/rd"}, "redis://:p%40ss%20w%2Frd@redis:6379/0"),
    ({"REDIS_HOST": "::1"}, "redis://[::1]:6379/0"),
])
def test_redis_variables_build_the_url_when_none_is_set(environ, url):
    assert load_config(None, environ).redis.url == url


@pytest.mark.parametrize("where", ["env", "file"])
def test_redis_host_and_port_are_ignored_when_a_url_is_set(tmp_path, where):
    signaling = {"REDIS_HOST": "elsewhere", "REDIS_PORT": "1234"}
    if where == "env":
        loaded = load_config(None, {**signaling, "REAPER_REDIS_URL": "redis://cache:6390/2"})
    else:
        loaded = load_toml(tmp_path, '[redis]\nurl = "redis://cache:6390/2"\n', signaling)
    assert loaded.redis.url == "redis://cache:6390/2"


@pytest.mark.parametrize("url, expected", [
    ("redis://cache:6390/2", "redis://:s3cret@cache:6390/2"),
    ("redis://app@cache:6390/2", "redis://app:s3cret@cache:6390/2"),
    ("rediss://cache:6390/2", "rediss://:s3cret@cache:6390/2"),
    ("redis://:own@cache:6390/2", "redis://:own@cache:6390/2"),  # the URL's own password wins
    ("redis://cache/0?password=own", "redis://cache/0?password=own"),
    ("unix:///run/redis.sock", "unix://:s3cret@/run/redis.sock"),
])
def test_redis_password_is_added_to_a_url_without_one(url, expected):
    loaded = load_config(None, {"REAPER_REDIS_URL": url, "REDIS_PASSWORD": "s3cret"})
    assert loaded.redis.url == expected


@pytest.mark.parametrize("environ, key", [
    ({"REDIS_PORT": "redis"}, "REDIS_PORT"),
    ({"REDIS_PORT": "0"}, "REDIS_PORT"),
    ({"REDIS_PORT": "70000"}, "REDIS_PORT"),
    ({"REDIS_HOST": "a/b"}, "REDIS_HOST"),
    ({"REDIS_HOST": "[::1"}, "REDIS_HOST"),
])
def test_bad_redis_variables_are_config_errors(environ, key):
    error = config_error(lambda: load_config(None, environ))
    assert error.key == key
    assert key in str(error)


# -- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [
    ('"500ms"', 0.5), ('"30s"', 30), ('"5m"', 300), ('"24h"', 86400), ('"1d"', 86400),
    ("90", 90), ("1.5", 1.5), ('"45"', 45), ('"2.5s"', 2.5), ('" 3 m "', 180),
])
def test_durations_in_the_file(tmp_path, text, seconds):
    loaded = load_toml(tmp_path, f"[timing]\nconnection_timeout = {text}\n")
    assert loaded.timing.connection_timeout_s == pytest.approx(seconds)


@pytest.mark.parametrize("raw, seconds", [
    ("45", 45), ("2.5", 2.5), ("1e3", 1000), ("250ms", 0.25), ("1m", 60), ("24h", 86400),
])
def test_durations_in_the_environment(raw, seconds):
    loaded = load_config(None, {"REAPER_TIMING_PING_INTERVAL": raw})
    assert loaded.timing.ping_interval_s == pytest.approx(seconds)


def test_clock_skew_may_be_zero_where_other_durations_may_not(tmp_path):
    assert load_config(None, {"REAPER_TIMING_CLOCK_SKEW": "0s"}).timing.clock_skew_s == 0
    assert load_config(None, {"REAPER_TIMING_MAX_FUTURE": "0"}).timing.max_future_s == 0
    error = config_error(lambda: load_config(None, {"REAPER_TIMING_PING_INTERVAL": "0s"}))
    assert "greater than zero" in error.expected


@pytest.mark.parametrize("text, environ, seconds", [
    ('"1h"', {}, 3600), ("90", {}, 90), ('"0s"', {}, 0), ('"1h"', {"REAPER_TIMING_MAX_FUTURE": "30s"}, 30),
])
def test_max_future_is_a_duration_of_zero_or_more(tmp_path, text, environ, seconds):
    loaded = load_toml(tmp_path, f"[timing]\nmax_future = {text}\n", environ)
    assert loaded.timing.max_future_s == seconds
    error = config_error(lambda: load_config(None, {"REAPER_TIMING_MAX_FUTURE": "-30s"}))
    assert error.key == "timing.max_future"


@pytest.mark.parametrize("value, seconds", [
    ("500ms", 0.5), ("30s", 30), ("5m", 300), ("24h", 86400), ("1d", 86400), ("7", 7), ("0", 0),
    (0, 0), (12, 12.0), (0.25, 0.25), ("1.5h", 5400), (" 10 s ", 10),
])
def test_parse_duration(value, seconds):
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [
    "", "s", "5 minutes", "5x", "-5s", "-5", "1e3s", "5m30s", "nan", "inf", True, False, None,
    -1, -0.5, float("nan"), float("inf"), 10 ** 400, [30], {"s": 30},
])
def test_parse_duration_refuses(value):
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (0.5, "500ms"), (1, "1s"), (30, "30s"), (90, "90s"), (300, "5m"), (5400, "90m"),
    (86400, "24h"), (0.0005, "0.0005s"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


# -- bad input: every kind names the key, the value and what is expected -------------------

DURATION = "duration"
BAD_FILES = [
    # (TOML text, key, value shown, words in "expected")
    ("[nope]\nx = 1\n", "nope", {"x": 1}, "sections"),
    ('[redis]\nurll = "redis://x"\n', "redis.urll", "redis://x", "one of the keys"),
    ('redis = "redis://x"\n', "redis", "redis://x", "table"),
    ('dry_run = true\n', "dry_run", True, "sections"),
    ('[timing]\nconnection_timeout = "3 minutes"\n', "timing.connection_timeout", "3 minutes", DURATION),
    ('[timing]\nconnection_timeout = 0\n', "timing.connection_timeout", 0, "greater than zero"),
    ('[timing]\nconnection_timeout = "0s"\n', "timing.connection_timeout", "0s", "greater than zero"),
    ('[timing]\nheartbeat_interval = -30\n', "timing.heartbeat_interval", -30, DURATION),
    ('[timing]\nclock_skew = "-5s"\n', "timing.clock_skew", "-5s", DURATION),
    ('[timing]\nmax_future = "-5m"\n', "timing.max_future", "-5m", DURATION),
    ('[timing]\nmax_future = -1\n', "timing.max_future", -1, DURATION),
    ('[timing]\nmax_future = "a year"\n', "timing.max_future", "a year", DURATION),
    ('[timing]\nmax_future = inf\n', "timing.max_future", float("inf"), DURATION),
    ('[timing]\nretention = nan\n', "timing.retention", "nan", DURATION),
    ('[timing]\nretention = inf\n', "timing.retention", float("inf"), DURATION),
    ('[timing]\nretention = true\n', "timing.retention", True, DURATION),
    ('[safety]\ncascade_max_age = [1]\n', "safety.cascade_max_age", [1], DURATION),
    ('[redis]\nrecord_format = "xml"\n', "redis.record_format", "xml", "json, hash"),
    ('[redis]\nrecord_format = 1\n', "redis.record_format", 1, "json, hash"),
    ('[startup]\npurge = "never"\n', "startup.purge", "never", "cold, all, stale, off"),
    ('[log]\nformat = "yaml"\n', "log.format", "yaml", "text, json"),
    ('[log]\nlevel = "LOUD"\n', "log.level", "LOUD", "INFO"),
    ('[log]\nlevel = 20\n', "log.level", 20, "INFO"),
    ('[safety]\nmass_expiry_min = 1.5\n', "safety.mass_expiry_min", 1.5, "whole number"),
    ('[safety]\nmass_expiry_min = "50"\n', "safety.mass_expiry_min", "50", "whole number"),
    ('[safety]\nmass_expiry_min = 0\n', "safety.mass_expiry_min", 0, "whole number >= 1"),
    ('[safety]\nmass_reap_per_sweep = true\n', "safety.mass_reap_per_sweep", True, "whole number"),
    ('[safety]\nmass_reap_per_sweep = -1\n', "safety.mass_reap_per_sweep", -1, "whole number >= 0"),
    ('[timing]\nmax_missed_pings = -1\n', "timing.max_missed_pings", -1, "whole number"),
    ('[events]\nmax_len = 100000000000000000000\n', "events.max_len", 10**20, "whole number <= 2147483647"),
    ('[redis]\nscan_count = 2147483648\n', "redis.scan_count", 2**31, "whole number <= 10000"),
    ('[redis]\nscan_count = 10001\n', "redis.scan_count", 10001, "whole number <= 10000"),
    ('[cascade]\nconcurrency = 1025\n', "cascade.concurrency", 1025, "whole number <= 1024"),
    ('[cascade]\nbatch_size = 10001\n', "cascade.batch_size", 10001, "whole number <= 10000"),
    ('[safety]\nmax_reap_fraction = 0\n', "safety.max_reap_fraction", 0, "greater than 0 and at most 1"),
    ('[safety]\nmax_reap_fraction = 1.5\n', "safety.max_reap_fraction", 1.5, "at most 1"),
    ('[safety]\nmax_reap_fraction = -0.1\n', "safety.max_reap_fraction", -0.1, "greater than 0"),
    ('[safety]\nmax_reap_fraction = nan\n', "safety.max_reap_fraction", "nan", "at most 1"),
    ('[safety]\nmax_reap_fraction = true\n', "safety.max_reap_fraction", True, "at most 1"),
    ('[safety]\ndry_run = "yes"\n', "safety.dry_run", "yes", "true or false"),
    ('[safety]\ndry_run = 1\n', "safety.dry_run", 1, "true or false"),
    ('[redis]\nurl = "http://cache:6379"\n', "redis.url", "http://cache:6379", "redis://"),
    ('[redis]\nurl = "redis://"\n', "redis.url", "redis://", "redis://"),
    ('[redis]\nurl = "redis://cache:port/0"\n', "redis.url", "redis://cache:port/0", "redis://"),
    ('[redis]\nurl = "cache:6379"\n', "redis.url", "cache:6379", "redis://"),
    ('[redis]\nurl = 6379\n', "redis.url", 6379, "string"),
    ('[auth_service]\nbase_url = "ftp://auth"\n', "auth_service.base_url", "ftp://auth", "http://"),
    ('[auth_service]\nbase_url = "auth-service:3001"\n', "auth_service.base_url", "auth-service:3001",
     "http://"),
    ('[user_service]\nbase_url = "http:users"\n', "user_service.base_url", "http:users", "http://"),
    ('[user_service]\nbase_url = "http://"\n', "user_service.base_url", "http://", "to disable"),
    ('[mongo]\nuri = "mysql://db"\n', "mongo.uri", "mysql://db", "mongodb://"),
    ('[mongo]\nuri = "mongodb://"\n', "mongo.uri", "mongodb://", "mongodb://"),
    ('[server]\nlisten = "9108"\n', "server.listen", "9108", "host:port"),
    ('[server]\nlisten = ":9108"\n', "server.listen", ":9108", "host:port"),
    ('[server]\nlisten = "localhost:99999"\n', "server.listen", "localhost:99999", "host:port"),
    ('[server]\nlisten = "localhost:http"\n', "server.listen", "localhost:http", "host:port"),
    ('[mongo]\nguest_filter = "isGuest"\n', "mongo.guest_filter", "isGuest", "table"),
    ('[mongo]\nguest_filter = {}\n', "mongo.guest_filter", {}, "non-empty table"),
    ('[mongo]\nguest_filter = [1]\n', "mongo.guest_filter", [1], "table"),
    ('[redis]\nconnection_prefix = 5\n', "redis.connection_prefix", 5, "string"),
]


@pytest.mark.parametrize("text, key, value, expected", BAD_FILES, ids=[row[1] + ":" + repr(row[2])
                                                                        for row in BAD_FILES])
def test_bad_file_values_are_config_errors(tmp_path, text, key, value, expected):
    error = config_error(lambda: load_toml(tmp_path, text))

    assert error.key == key
    if value == "nan":
        assert error.value != error.value  # NaN
    else:
        assert error.value == value
    assert expected in error.expected
    assert key in str(error) and expected in str(error)


BAD_ENVIRONMENT = [
    ("REAPER_REDIS_URLL", "redis://x", "REAPER_REDIS_URLL", "known REAPER_"),
    ("REAPER_NOPE", "1", "REAPER_NOPE", "known REAPER_"),
    ("REAPER_TIMING_PING_INTERVAL", "soon", "timing.ping_interval", DURATION),
    ("REAPER_TIMING_PING_INTERVAL", "-5", "timing.ping_interval", DURATION),
    ("REAPER_TIMING_PING_INTERVAL", "-5s", "timing.ping_interval", DURATION),
    ("REAPER_TIMING_PING_INTERVAL", "0", "timing.ping_interval", "greater than zero"),
    ("REAPER_TIMING_PING_INTERVAL", "inf", "timing.ping_interval", DURATION),
    ("REAPER_TIMING_PING_INTERVAL", "nan", "timing.ping_interval", DURATION),
    ("REAPER_TIMING_PING_INTERVAL", "1e400", "timing.ping_interval", DURATION),
    ("REAPER_TIMING_PING_INTERVAL", "", "timing.ping_interval", DURATION),
    ("REAPER_TIMING_MAX_MISSED_PINGS", "three", "timing.max_missed_pings", "whole number"),
    ("REAPER_TIMING_MAX_MISSED_PINGS", "2.5", "timing.max_missed_pings", "whole number"),
    ("REAPER_TIMING_MAX_MISSED_PINGS", "0", "timing.max_missed_pings", "whole number >= 1"),
    ("REAPER_EVENTS_MAX_LEN", "99999999999999999999", "events.max_len", "whole number <= 2147483647"),
    ("REAPER_SAFETY_MAX_REAP_FRACTION", "half", "safety.max_reap_fraction", "at most 1"),
    ("REAPER_SAFETY_MAX_REAP_FRACTION", "2", "safety.max_reap_fraction", "at most 1"),
    ("REAPER_SAFETY_DRY_RUN", "maybe", "safety.dry_run", "true or false"),
    ("REAPER_STARTUP_PURGE", "sometimes", "startup.purge", "cold, all, stale, off"),
    ("REAPER_LOG_FORMAT", "xml", "log.format", "text, json"),
    ("REAPER_LOG_LEVEL", "verbose", "log.level", "DEBUG"),
    ("REAPER_REDIS_RECORD_FORMAT", "list", "redis.record_format", "json, hash"),
    ("REAPER_REDIS_URL", "localhost:6379", "redis.url", "redis://"),
    ("REAPER_AUTH_SERVICE_BASE_URL", "http://auth:port", "auth_service.base_url", "http://"),
    ("REAPER_MONGO_URI", "postgres://db", "mongo.uri", "mongodb://"),
    ("REAPER_MONGO_GUEST_FILTER", "isGuest=true", "mongo.guest_filter", "JSON object"),
    ("REAPER_MONGO_GUEST_FILTER", "[1]", "mongo.guest_filter", "JSON object"),
    ("REAPER_MONGO_GUEST_FILTER", "{}", "mongo.guest_filter", "non-empty"),
    ("REAPER_SERVER_LISTEN", "everywhere", "server.listen", "host:port"),
]


@pytest.mark.parametrize("name, raw, key, expected", BAD_ENVIRONMENT,
                         ids=[f"{row[0]}={row[1]}" for row in BAD_ENVIRONMENT])
def test_bad_environment_values_are_config_errors(name, raw, key, expected):
    error = config_error(lambda: load_config(None, {name: raw}))

    assert error.key == key
    assert error.value == raw
    assert expected in error.expected
    assert key in str(error) and repr(raw) in str(error)
    assert name in str(error)  # the variable to fix: the key of an unknown one, else said beside it
    assert error.origin == ("" if key == name else f"from {name}")


@pytest.mark.parametrize("overrides, key", [
    ({"safety.dry_run": "yes"}, "safety.dry_run"),
    ({"startup.purge": "never"}, "startup.purge"),
    ({"safety.nope": True}, "safety.nope"),
])
def test_bad_overrides_are_config_errors(overrides, key):
    assert config_error(lambda: load_config(None, {}, overrides)).key == key


def test_invalid_toml_names_the_file_and_the_problem(tmp_path):
    path = write(tmp_path / "broken.toml", '[redis\nurl = "redis://x"\n')

    error = config_error(lambda: load_config(path, {}))

    assert error.key == str(path)
    assert "valid TOML" in error.expected and "line 1" in error.expected


def test_the_first_bad_value_stops_loading_even_when_later_layers_are_fine(tmp_path):
    error = config_error(lambda: load_toml(tmp_path, '[log]\nformat = "xml"\n',
                                           {"REAPER_LOG_FORMAT": "json"}))
    # The environment would fix it, but a bad file is still a bad file: the operator must know.
    assert error.key == "log.format" and error.value == "xml"


# -- where a bad value came from (docs/configuration.md: the variable, when it came from one) -----------

@pytest.mark.parametrize("name, raw, key", [
    ("REAPER_TIMING_HEARTBEAT_INTERVAL", "every 30s", "timing.heartbeat_interval"),  # a bad duration
    ("REAPER_CASCADE_CONCURRENCY", "16.5", "cascade.concurrency"),  # a bad int
    ("REAPER_STARTUP_PURGE", "everything", "startup.purge"),  # an unknown enum value
])
def test_a_bad_value_from_a_variable_names_the_variable_the_key_and_the_value(name, raw, key):
    message = str(config_error(lambda: load_config(None, {name: raw})))

    assert message.startswith(f"config: {key} = {raw!r} (from {name}): expected ")


@pytest.mark.parametrize("text, key", [
    ('[timing]\nheartbeat_interval = "every 30s"\n', "timing.heartbeat_interval"),
    ("[cascade]\nconcurrency = 16.5\n", "cascade.concurrency"),
    ('[startup]\npurge = "everything"\n', "startup.purge"),
])
def test_a_bad_value_from_the_file_names_the_file(tmp_path, text, key):
    error = config_error(lambda: load_toml(tmp_path, text))

    assert error.key == key and error.origin == f"in {tmp_path / 'reaper.conf.toml'}"
    assert f"(in {tmp_path / 'reaper.conf.toml'}): expected" in str(error)


def test_a_flag_names_no_variable_even_when_one_is_set_too():
    error = config_error(lambda: load_config(None, {"REAPER_STARTUP_PURGE": "off"}, {"startup.purge": "never"}))
    assert error.key == "startup.purge" and error.origin == "" and "REAPER_" not in str(error)


@pytest.mark.parametrize("raw", ["tok-Zq8v3PLuS-91f2\n", " tok-Zq8v3PLuS-91f2", "tok Zq8v3PLuS", "tok-Zq8v3PLüS"])
def test_a_bad_token_from_a_variable_names_it_and_never_shows_the_token(raw):
    error = config_error(lambda: load_config(None, {"REAPER_AUTH_SERVICE_TOKEN": raw}))

    assert error.key == "auth_service.token" and "(from REAPER_AUTH_SERVICE_TOKEN)" in str(error)
    assert "Zq8v3PLuS" not in str(error) and "= ***" in str(error)
    assert "visible ASCII" in error.expected


def test_a_bad_token_in_the_file_names_the_file_and_never_shows_the_token(tmp_path):
    error = config_error(lambda: load_toml(tmp_path, '[user_service]\ntoken = "tok-Zq8v3PLuS\\n"\n'))

    assert error.key == "user_service.token" and "reaper.conf.toml" in error.origin
    assert "Zq8v3PLuS" not in str(error) and "= ***" in str(error)


def test_a_good_token_is_taken_as_it_is():
    loaded = load_config(None, {"REAPER_AUTH_SERVICE_TOKEN": "eyJh.b-c_d~e+f/g=="})
    assert loaded.auth_service.token == "eyJh.b-c_d~e+f/g=="


def test_a_bad_redis_url_from_a_variable_names_it_and_masks_its_password():
    error = config_error(lambda: load_config(None, {"REAPER_REDIS_URL": "http://:hunter2@cache:6379/0"}))

    assert error.key == "redis.url" and error.origin == "from REAPER_REDIS_URL"
    assert "hunter2" not in str(error) and "http://:***@cache:6379/0" in str(error)


@pytest.mark.parametrize("environ, variable", [
    ({"REDIS_PORT": "70000", "REDIS_PASSWORD": "hunter2"}, "REDIS_PORT"),
    ({"REDIS_HOST": "cache/0", "REDIS_PASSWORD": "hunter2"}, "REDIS_HOST"),
])
def test_a_bad_signaling_variable_is_named_and_the_password_beside_it_never_shown(environ, variable):
    error = config_error(lambda: load_config(None, environ))

    assert error.key == variable and str(error).startswith(f"config: {variable} = ")
    assert "redis.url is not set" in error.expected  # why a REDIS_* variable was read at all
    assert "hunter2" not in str(error)


@pytest.mark.parametrize("where", ["env", "file"])
def test_keys_that_go_together_say_where_the_bad_one_came_from(tmp_path, where):
    if where == "env":
        error = config_error(lambda: load_config(None, {"REAPER_REDIS_URL": "redis://:hunter2@cache:6379/0",
                                                         "REAPER_REDIS_TLS_VERIFY": "false"}))
        assert error.origin == "from REAPER_REDIS_TLS_VERIFY"
    else:
        error = config_error(lambda: load_toml(tmp_path, "[redis]\ntls_verify = false\n",
                                               {"REAPER_REDIS_URL": "redis://:hunter2@cache:6379/0"}))
        assert error.origin == f"in {tmp_path / 'reaper.conf.toml'}"
    assert error.key == "redis.tls_verify" and "rediss://" in error.expected
    assert "hunter2" not in str(error)


# -- secrets ------------------------------------------------------------------------------

SECRET_ENV = {
    "REAPER_REDIS_URL": "redis://reaper:r%40dis-pw@cache:6379/0",
    "REAPER_MONGO_URI": "mongodb://app:mongo-pw@mongo:27017/?replicaSet=rs0",
    "REAPER_AUTH_SERVICE_TOKEN": "auth-token-123",
    "REAPER_USER_SERVICE_TOKEN": "user-token-456",
}
SECRETS = ("r%40dis-pw", "r@dis-pw", "mongo-pw", "auth-token-123", "user-token-456")


def test_as_masked_dict_never_shows_a_secret():
    masked = as_masked_dict(load_config(None, SECRET_ENV))
    text = json.dumps(masked)

    for secret in SECRETS:
        assert secret not in text
    assert masked["redis"]["url"] == "redis://reaper:***@cache:6379/0"
    assert masked["mongo"]["uri"] == "mongodb://app:***@mongo:27017/?replicaSet=rs0"
    assert masked["auth_service"]["token"] == "***"
    assert masked["user_service"]["token"] == "***"


def test_as_masked_dict_shows_empty_secrets_as_empty():
    masked = as_masked_dict(load_config(None, {}))
    assert masked["auth_service"]["token"] == "" and masked["mongo"]["uri"] == ""


def test_a_token_that_looks_like_a_url_is_still_masked():
    masked = as_masked_dict(load_config(None, {"REAPER_AUTH_SERVICE_TOKEN": "abc://def"}))
    assert masked["auth_service"]["token"] == "***"


def test_secrets_of_lists_every_secret_in_every_spelling():
    found = secrets_of(load_config(None, SECRET_ENV))
    assert set(SECRETS) <= set(found)


def test_secrets_of_includes_redis_password_from_the_environment():
    loaded = load_config(None, {"REDIS_HOST": "cache", "REDIS_PASSWORD": "p@ss"})
    assert {"p@ss", "p%40ss"} <= set(secrets_of(loaded))


def test_secrets_of_includes_a_password_in_the_query_string():
    loaded = load_config(None, {"REAPER_REDIS_URL": "redis://cache/0?password=q-pw"})
    assert "q-pw" in secrets_of(loaded)
    assert "q-pw" not in json.dumps(as_masked_dict(loaded))


@pytest.mark.parametrize("url, masked", [
    ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
    ("redis://user:pw@h:1/0", "redis://user:***@h:1/0"),
    ("redis://user@h:1/0", "redis://user@h:1/0"),
    ("redis://h:1/0", "redis://h:1/0"),
    ("redis://h/0?password=pw&db=1", "redis://h/0?password=***&db=1"),
    ("redis://u:pw@[::1", "redis://u:***@[::1"),  # not even parseable
    ("", ""),
])
def test_mask_url(url, masked):
    assert mask_url(url) == masked


def test_a_bad_url_error_does_not_show_its_password():
    error = config_error(lambda: load_config(None, {"REAPER_REDIS_URL": "redis://:hunter2@cache:port"}))
    assert "hunter2" not in str(error) and error.key == "redis.url"


@pytest.mark.parametrize("name", ["REAPER_REDIS_PASSWORD", "REAPER_AUTH_TOKEN", "REAPER_MONGO_SECRET"])
def test_an_unknown_secret_looking_variable_is_refused_without_echoing_it(name):
    error = config_error(lambda: load_config(None, {name: "hunter2"}))
    assert error.key == name and "hunter2" not in str(error)


# -- config.example.toml --------------------------------------------------------------------


def _duration_keys() -> set[tuple[str, str]]:
    keys = set()
    for section in config_module.SECTIONS:
        for f in dataclasses.fields(getattr(Config(), section)):
            if f.metadata.get("kind") == "duration":
                keys.add((section, f.name[:-2]))
    return keys


def test_example_config_matches_defaults():
    example = tomllib.loads(EXAMPLE.read_text())
    defaults = as_masked_dict(load_config(None, {}))
    durations = _duration_keys()

    assert set(example) == set(defaults)
    for section, table in defaults.items():
        assert set(example[section]) == set(table), section
        for key, default in table.items():
            written = example[section][key]
            if (section, key) == ("redis", "url"):
                # "" means "build it from REDIS_HOST / REDIS_PORT", whose defaults give this URL.
                assert written == "" and default == "redis://localhost:6379/0"
            elif (section, key) in durations:
                assert parse_duration(written) == parse_duration(default), f"{section}.{key}"
            else:
                assert written == default, f"{section}.{key}"


def test_example_config_loads_to_the_defaults():
    loaded = load_config(EXAMPLE, {})
    assert loaded.source == str(EXAMPLE)
    assert dataclasses.replace(loaded, source="defaults") == load_config(None, {})


@pytest.mark.parametrize("where, config", [
    ("file", lambda tmp: load_config(write(tmp / "reaper.toml", "[safety]\nmass_reap_per_sweep = 0\n"), {})),
    ("environment", lambda tmp: load_config(None, {"REAPER_SAFETY_MASS_REAP_PER_SWEEP": "0"})),
])
def test_a_mass_reap_budget_of_0_is_accepted_and_a_trickle_may_be_set(tmp_path, where, config):
    """docs/configuration.md: 0 = none (the default); an operator may allow a trickle."""
    assert config(tmp_path).safety.mass_reap_per_sweep == 0
    assert load_config(None, {"REAPER_SAFETY_MASS_REAP_PER_SWEEP": "25"}).safety.mass_reap_per_sweep == 25



def test_the_largest_counts_are_accepted(tmp_path):
    loaded = load_toml(tmp_path, "[events]\nmax_len = 2147483647\n[redis]\nscan_count = 10000\n"
                                 "[cascade]\nconcurrency = 1024\nbatch_size = 10000\n")

    assert loaded.events.max_len == 2**31 - 1 and loaded.redis.scan_count == 10_000
    assert (loaded.cascade.concurrency, loaded.cascade.batch_size) == (1024, 10_000)
