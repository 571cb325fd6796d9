"""`reaper check`: can reaper reach what it works with? One line each: OK, FAIL, WARN or disabled;
a FAIL says what was tried (the URL, its credentials masked) and what went wrong. ``--json``
gives the same as one object (``as_json``), with each check's latency."""

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import redis

from reaper.store import cluster
from reaper.core import redact
from reaper.core.config import Config, mask_url, secrets_of
from reaper.core.errors import RedisUnavailable, StepError
from reaper.store.clockjump import HOLD_FIELD, hold_end
from reaper.core.keys import Keys
from reaper.app.purge import COLD
from reaper.cascade.services import AuthService, GuestStore, UserService
from reaper.signaling.servers import SignalingCluster
from reaper.store.client import REDIS_DOWN, connect, describe_connection, key_type, ping, redis_now, stream_full

OK, FAIL, WARN, OFF = "OK", "FAIL", "WARN", "disabled"
Clock = Callable[[], float]


@dataclass(frozen=True)
class Line:
    """One check. ``detail`` is what the text line says; ``tried`` what was asked (a URL, its
    credentials masked), ``error`` why it failed, ``latency_s`` how long the asking took."""

    name: str
    status: str
    detail: str
    tried: str = ""
    error: str = ""
    latency_s: float | None = None

    def __str__(self) -> str:
        return f"{self.name + ':':<14} {self.status:<8} {self.detail}".rstrip()

    def as_dict(self) -> dict:
        latency_ms = None if self.latency_s is None else round(self.latency_s * 1000, 1)
        return {"status": self.status.lower(), "tried": self.tried or None, "error": self.error or None,
                "latency_ms": latency_ms, "detail": self.detail}


def failed(name: str, tried: str, error: str, latency_s: float | None) -> Line:
    """A FAIL line: what was tried, then what went wrong."""
    return Line(name, FAIL, f"{tried}: {error}", tried, error, latency_s)


def as_json(lines: list[Line], code: int) -> dict:
    """`reaper check --json`: the exit code, and each check under its name (docs/cli.md)."""
    return {"ok": code == 0, "exit_code": code,
            "checks": {json_name(line.name): line.as_dict() for line in lines}}


def json_name(name: str) -> str:
    return name.replace("-", "_").replace(" ", "_")


class _Stopwatch:
    def __init__(self, clock: Clock):
        self.clock, self.start = clock, clock()

    def read(self) -> float:
        return max(0.0, self.clock() - self.start)


def check(config: Config, mongo_client=None, clock: Clock = time.monotonic) -> tuple[list[Line], int]:
    """The lines to print and the exit code: 3 when Redis fails, 1 when another does."""
    lines = check_redis(config, clock)
    redis_failed = lines[0].status == FAIL
    lines += [
        _check_http(AuthService(config.auth_service, 1), config, clock),
        _check_http(UserService(config.user_service, 1), config, clock),
        _check_mongo(config, mongo_client, clock),
    ]
    scrub = redact.scrubber(secrets_of(config))  # whatever a reply or a driver echoed
    lines = [replace(line, detail=scrub(line.detail), tried=scrub(line.tried), error=scrub(line.error))
             for line in lines]
    if redis_failed:
        return lines, 3
    return lines, 1 if any(line.status == FAIL for line in lines) else 0


def check_redis(config: Config, clock: Clock = time.monotonic) -> list[Line]:
    where = mask_url(config.redis.url)
    watch = _Stopwatch(clock)
    try:
        client = connect(config)  # a cluster client asks its nodes at once
    except RedisUnavailable as exc:
        return [failed("redis", where, _said(exc, config).removeprefix("redis: "), watch.read())]
    try:
        ping(client)
        latency_s = watch.read()
        infos = cluster.info_of_each(client) if cluster.is_cluster(client) else [client.info()]
        mode = _mode(config, client)
        key_types = check_key_types(config, client, clock)
        signaling = check_signaling(config, client, clock)
        clock_hold = check_clock(config, client)
    except (RedisUnavailable, *REDIS_DOWN, redis.RedisError) as exc:  # also ACL and protocol errors
        error = _said(exc, config).removeprefix("redis: ")
        return [failed("redis", f"{where}{_mode(config, client)}", error, watch.read())]
    finally:
        client.close()
    versions = "/".join(sorted({str(info.get("redis_version", "?")) for info in infos}))
    policies = sorted({str(info.get("maxmemory_policy", "noeviction")) for info in infos})
    policy = "/".join(policies)  # a cluster's nodes may differ: each is said
    lines = [Line("redis", OK, f"{where}{mode} (Redis {versions}, maxmemory-policy {policy})",
                  f"{where}{mode}", latency_s=latency_s)]
    if any(p.startswith("allkeys-") for p in policies):
        lines.append(Line("redis policy", WARN, f"maxmemory-policy {policy} may evict live guests' "
                          "records; reaper skips orphans in sweeps after an eviction"))
    return [*lines, key_types, signaling, *clock_hold]


def check_clock(config: Config, client: redis.Redis) -> list[Line]:
    """A WARN line while a clock jump's hold lasts (reaper/store/clockjump.py); none otherwise."""
    try:
        until = hold_end(client.hget(Keys.from_config(config.redis).state, HOLD_FIELD))
    except redis.ResponseError:  # reaper:state of another type: the keys line says so
        return []
    left = None if until is None else until - redis_now(client)
    if left is None or left <= 0:
        return []
    return [Line("clock", WARN, f"Redis TIME jumped against reaper's clock: no guest is judged by its "
                 f"timestamps, and no cascade or retention runs, for {left:.0f}s more")]


def check_key_types(config: Config, client: redis.Redis, clock: Clock = time.monotonic) -> Line:
    """users:online and reaper's own keys, each of the type reaper reads it as: one of another
    type makes every sweep (or cascade, or the lease) fail on it; and the audit trail taking
    entries (AuditTrailFull)."""
    keys = Keys.from_config(config.redis)
    expected = keys.expected_types()
    tried, watch = f"TYPE {' '.join(expected)}; XINFO STREAM {keys.events}", _Stopwatch(clock)
    found = {key: key_type(client, key) for key in expected}
    full = config.events.max_len > 0 and found[keys.events] == "stream" and stream_full(client, keys.events)
    latency_s = watch.read()
    wrong = [f"{key} holds a {found[key]}, not a {kind}" for key, kind in expected.items()
             if found[key] not in (kind, "none")]
    wrong += [f"{keys.events} has used the last possible entry id and takes no more decision records "
              "(delete it: only the audit trail is lost)"] if full else []
    if wrong:
        error = "; ".join(wrong) + (" (another writer, or a redis.online_key / redis.reaper_prefix "
                                    "naming someone else's keys)")
        return Line("keys", FAIL, error, tried, error, latency_s)  # the line names each key
    return Line("keys", OK, f"{config.redis.online_key} and reaper's own keys are of the types reaper reads",
                tried, latency_s=latency_s)


def check_signaling(config: Config, client: redis.Redis, clock: Clock = time.monotonic) -> Line:
    """How many signaling servers the socket.io adapter's request channel has, where reaper
    uses them: [notify], and startup.purge = "cold", which purges when there are none."""
    notify, cold = config.notify.enabled, config.startup.purge == COLD
    if not (notify or cold):
        return Line("signaling", OFF, f"(notify.enabled = false, startup.purge = {config.startup.purge})")
    tier = SignalingCluster(client, config.notify)
    channel = tier.channels.request
    tried, watch = f"PUBSUB NUMSUB {channel}", _Stopwatch(clock)
    try:
        servers = tier.servers()
    except redis.RedisError as exc:  # e.g. an ACL without PUBSUB
        return failed("signaling", tried, _said(exc, config), watch.read())
    latency_s = watch.read()
    if servers:
        start = "; a `reaper run` starting now sweeps instead of purging" if cold else ""
        return Line("signaling", OK, f"{servers} server(s) subscribe {channel}{start}", tried, latency_s=latency_s)
    effects = ([f"a `reaper run` starting now purges all guest state (startup.purge = {COLD})"]
               if cold else []) + (["nothing is fenced or told"] if notify else [])
    return Line("signaling", WARN, f"no server subscribes {channel}: {'; '.join(effects)}. If signaling "
                "servers are up, they use another channel: see notify.channel_prefix and notify.namespace",
                tried, latency_s=latency_s)


def _mode(config: Config, client: redis.Redis) -> str:
    """Through sentinels? Over TLS? Said after the URL, whose host sentinels override."""
    mode = describe_connection(config, client)
    return f" [{mode}]" if mode else ""


def _check_http(service, config: Config, clock: Clock = time.monotonic) -> Line:
    if not service.enabled:
        return Line(service.name, OFF, "(base_url is empty)")
    url = health_url(str(service._client.base_url))
    watch = _Stopwatch(clock)
    try:
        service.health()
        return Line(service.name, OK, url, f"GET {url}", latency_s=watch.read())
    except StepError as exc:
        error = _said(exc, config).removeprefix(f"{service.name}: GET /health: ")  # said by the line
        return failed(service.name, f"GET {url}", error, watch.read())
    finally:
        service.close()


def health_url(base_url: str) -> str:
    """Where `GET /health` went, as shown: the base URL's path and /health, its password masked."""
    return mask_url(base_url.rstrip("/") + "/health")


def _said(exc: Exception, config: Config | None = None) -> str:
    """An error as a check line shows it: one line, credentials masked (the configuration's own
    secrets too, when given)."""
    return redact.printable(redact.scrub(str(exc), secrets_of(config) if config else ()))


def _check_mongo(config: Config, mongo_client, clock: Clock = time.monotonic) -> Line:
    if not config.mongo.uri and mongo_client is None:
        return Line("mongo", OFF, "(uri is empty)")
    where = f"{mask_url(config.mongo.uri) or 'the client given'} {config.mongo.database}.{config.mongo.collection}"
    watch = _Stopwatch(clock)
    try:
        store = GuestStore(config.mongo, mongo_client)
    except Exception as exc:  # noqa: BLE001 - pymongo reads the URI here (and asks DNS for +srv)
        return failed("mongo", f"connect {where}", f"{type(exc).__name__}: {_said(exc, config)}", watch.read())
    try:
        store.ping()
        return Line("mongo", OK, where, f"ping {where}", latency_s=watch.read())
    except StepError as exc:
        return failed("mongo", f"ping {where}", _said(exc, config).removeprefix("mongo: ping: "), watch.read())
    finally:
        store.close()
