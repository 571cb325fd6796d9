"""`reaper check`: can reaper reach what it works with? One line each: OK, FAIL, WARN or disabled."""

from dataclasses import dataclass

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
from reaper.store.client import REDIS_DOWN, connect, describe_connection, key_type, ping, redis_now

OK, FAIL, WARN, OFF = "OK", "FAIL", "WARN", "disabled"


@dataclass(frozen=True)
class Line:
    name: str
    status: str
    detail: str

    def __str__(self) -> str:
        return f"{self.name + ':':<14} {self.status:<8} {self.detail}".rstrip()


def check(config: Config, mongo_client=None) -> tuple[list[Line], int]:
    """The lines to print and the exit code: 3 when Redis fails, 1 when another does."""
    lines = check_redis(config)
    redis_failed = lines[0].status == FAIL
    lines += [
        _check_http(AuthService(config.auth_service, 1)),
        _check_http(UserService(config.user_service, 1)),
        _check_mongo(config, mongo_client),
    ]
    if redis_failed:
        return lines, 3
    return lines, 1 if any(line.status == FAIL for line in lines) else 0


def check_redis(config: Config) -> list[Line]:
    where = mask_url(config.redis.url)
    try:
        client = connect(config)  # a cluster client asks its nodes at once
    except RedisUnavailable as exc:
        return [Line("redis", FAIL, f"{where}: {_said(exc, config)}")]
    try:
        ping(client)
        infos = cluster.info_of_each(client) if cluster.is_cluster(client) else [client.info()]
        mode = _mode(config, client)
        key_types = check_key_types(config, client)
        signaling = check_signaling(config, client)
        clock = check_clock(config, client)
    except (RedisUnavailable, *REDIS_DOWN, redis.RedisError) as exc:  # also ACL and protocol errors
        return [Line("redis", FAIL, f"{where}{_mode(config, client)}: {_said(exc, config)}")]
    finally:
        client.close()
    versions = "/".join(sorted({str(info.get("redis_version", "?")) for info in infos}))
    policies = sorted({str(info.get("maxmemory_policy", "noeviction")) for info in infos})
    policy = "/".join(policies)  # a cluster's nodes may differ: each is said
    lines = [Line("redis", OK, f"{where}{mode} (Redis {versions}, maxmemory-policy {policy})")]
    if any(p.startswith("allkeys-") for p in policies):
        lines.append(Line("redis policy", WARN, f"maxmemory-policy {policy} may evict live guests' "
                          "records; reaper skips orphans in sweeps after an eviction"))
    return [*lines, key_types, signaling, *clock]


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


def check_key_types(config: Config, client: redis.Redis) -> Line:
    """users:online and reaper's own keys, each of the type reaper reads it as: one of another
    type makes every sweep (or cascade, or the lease) fail on it."""
    expected = Keys.from_config(config.redis).expected_types()
    found = {key: key_type(client, key) for key in expected}
    wrong = [f"{key} holds a {found[key]}, not a {kind}" for key, kind in expected.items()
             if found[key] not in (kind, "none")]
    if wrong:
        return Line("keys", FAIL, "; ".join(wrong) + " (another writer, or a redis.online_key / "
                    "redis.reaper_prefix naming someone else's keys)")
    return Line("keys", OK, f"{config.redis.online_key} and reaper's own keys are of the types reaper reads")


def check_signaling(config: Config, client: redis.Redis) -> Line:
    """How many signaling servers the socket.io adapter's request channel has, where reaper
    uses them: [notify], and startup.purge = "cold", which purges when there are none."""
    notify, cold = config.notify.enabled, config.startup.purge == COLD
    if not (notify or cold):
        return Line("signaling", OFF, f"(notify.enabled = false, startup.purge = {config.startup.purge})")
    tier = SignalingCluster(client, config.notify)
    try:
        servers, channel = tier.servers(), tier.channels.request
    except redis.RedisError as exc:  # e.g. an ACL without PUBSUB
        return Line("signaling", FAIL, f"PUBSUB NUMSUB {tier.channels.request}: {_said(exc, config)}")
    if servers:
        start = "; a `reaper run` starting now sweeps instead of purging" if cold else ""
        return Line("signaling", OK, f"{servers} server(s) subscribe {channel}{start}")
    effects = ([f"a `reaper run` starting now purges all guest state (startup.purge = {COLD})"]
               if cold else []) + (["nothing is fenced or told"] if notify else [])
    return Line("signaling", WARN, f"no server subscribes {channel}: {'; '.join(effects)}. If signaling "
                "servers are up, they use another channel: see notify.channel_prefix and notify.namespace")


def _mode(config: Config, client: redis.Redis) -> str:
    """Through sentinels? Over TLS? Said after the URL, whose host sentinels override."""
    mode = describe_connection(config, client)
    return f" [{mode}]" if mode else ""


def _check_http(service) -> Line:
    if not service.enabled:
        return Line(service.name, OFF, "(base_url is empty)")
    try:
        service.health()
        return Line(service.name, OK, health_url(str(service._client.base_url)))
    except StepError as exc:
        return Line(service.name, FAIL, _said(exc))
    finally:
        service.close()


def health_url(base_url: str) -> str:
    """Where `GET /health` went, as shown: the base URL's path and /health, its password masked."""
    return mask_url(base_url.rstrip("/") + "/health")


def _said(exc: Exception, config: Config | None = None) -> str:
    """An error as a check line shows it: one line, credentials masked (the configuration's own
    secrets too, when given)."""
    return redact.printable(redact.scrub(str(exc), secrets_of(config) if config else ()))


def _check_mongo(config: Config, mongo_client) -> Line:
    if not config.mongo.uri and mongo_client is None:
        return Line("mongo", OFF, "(uri is empty)")
    store = GuestStore(config.mongo, mongo_client)
    try:
        store.ping()
        return Line("mongo", OK, f"{mask_url(config.mongo.uri)} {config.mongo.database}."
                                 f"{config.mongo.collection}")
    except StepError as exc:
        return Line("mongo", FAIL, _said(exc, config))
    finally:
        store.close()
