"""Typed, frozen configuration, loaded once at the edge (docs/configuration.md).

Order: defaults, then the TOML file, then ``REAPER_<SECTION>_<KEY>`` variables (and the
signaling service's ``REDIS_HOST`` / ``REDIS_PORT`` / ``REDIS_PASSWORD`` when no
``redis.url`` is given), then command-line overrides; later wins. Every value is checked
before anything else runs; a bad one raises ConfigError naming the key.

Durations are stored in seconds, in attributes ending in ``_s`` (key ``connection_timeout``
is attribute ``connection_timeout_s``).
"""

import base64
import dataclasses
import difflib
import json
import os
import re
import ssl
import tomllib
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote, unquote, urlsplit

from reaper.core import redact
from reaper.core.durations import format_duration, parse_duration
from reaper.core.errors import ConfigError
from reaper.core.guest_ids import prefix_problem

# socket.io's own event names: no notify.event may take one.
RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "disconnecting",
                             "newListener", "removeListener"})

DEFAULT_PATHS = (Path("reaper.toml"), Path("/etc/reaper/reaper.toml"))
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


def _duration(default: str, minimum: float = 0.0):
    return field(default=parse_duration(default), metadata={"kind": "duration", "min": minimum})


def _choice(default: str, *choices: str):
    return field(default=default, metadata={"kind": "choice", "choices": choices})


# Every count reaper reads goes into a Redis argument or a batch size somewhere: past a 32-bit
# int it is a typo, and past Redis's own limit (a 64-bit int) a script would fail half-way.
MAX_INT = 2**31 - 1


def _int(default: int, minimum: int = 1, maximum: int = MAX_INT):
    return field(default=default, metadata={"kind": "int", "min": minimum, "max": maximum})


def _secret(default: str = ""):
    return field(default=default, metadata={"secret": True})


@dataclass(frozen=True)
class RedisConfig:
    url: str = field(default="", metadata={"kind": "redis_url", "secret": True})
    connection_prefix: str = "guest_connection:"
    session_prefix: str = "guest_session:"
    online_key: str = "users:online"
    guest_id_prefix: str = "guest_"
    record_format: str = _choice("json", "json", "hash")
    reaper_prefix: str = "reaper:"
    scan_count: int = _int(1000, maximum=10_000)  # one SCAN of more keys holds Redis for over ~15 ms
    socket_timeout_s: float = _duration("5s", 0.001)
    sentinels: tuple = field(default=(), metadata={"kind": "host_ports"})
    service_name: str = field(default="mymaster", metadata={"kind": "name"})
    sentinel_password: str = _secret()
    tls_ca_file: str = field(default="", metadata={"kind": "readable_file"})
    tls_cert_file: str = field(default="", metadata={"kind": "readable_file"})
    tls_key_file: str = field(default="", metadata={"kind": "readable_file"})
    tls_verify: bool = True
    cluster: bool = False

    @property
    def scheme(self) -> str:
        """redis, rediss or unix: the URL's scheme without a "+cluster"."""
        return urlsplit(self.url).scheme.removesuffix("+cluster")

    @property
    def is_cluster(self) -> bool:
        """Redis Cluster: ``redis.cluster = true`` or a redis+cluster:// / rediss+cluster:// URL."""
        return self.cluster or urlsplit(self.url).scheme.endswith("+cluster")

    @property
    def record_type(self) -> str:
        """The Redis type of a guest record, as TYPE names it."""
        return "hash" if self.record_format == "hash" else "string"


@dataclass(frozen=True)
class TimingConfig:
    heartbeat_interval_s: float = _duration("30s", 0.001)
    cleanup_interval_s: float = _duration("5m", 0.001)
    cascade_interval_s: float = _duration("5s", 0.001)
    connection_timeout_s: float = _duration("3m", 0.001)
    ping_interval_s: float = _duration("1m", 0.001)
    max_missed_pings: int = _int(3)
    retention_s: float = _duration("24h", 0.001)
    clock_skew_s: float = _duration("5s")
    max_future_s: float = _duration("5m")  # a timestamp further ahead makes its record malformed


@dataclass(frozen=True)
class StartupConfig:
    purge: str = _choice("cold", "cold", "all", "stale", "off")


@dataclass(frozen=True)
class ServiceConfig:
    base_url: str = field(default="", metadata={"kind": "http_url"})
    token: str = field(default="", metadata={"kind": "token", "secret": True})
    timeout_s: float = _duration("5s", 0.001)


@dataclass(frozen=True)
class MongoConfig:
    uri: str = field(default="", metadata={"kind": "mongo_uri", "secret": True})
    database: str = "voip"
    collection: str = "users"
    id_field: str = "userId"
    created_field: str = "createdAt"
    guest_filter: dict = field(default_factory=lambda: {"isGuest": True}, metadata={"kind": "table"})
    timeout_s: float = _duration("5s", 0.001)


@dataclass(frozen=True)
class SafetyConfig:
    dry_run: bool = False
    max_reap_fraction: float = field(default=0.5, metadata={"kind": "fraction"})
    mass_expiry_min: int = _int(50)
    mass_reap_per_sweep: int = _int(0, minimum=0)  # while mass expiry holds; 0: none (--force lifts it)
    cascade_max_age_s: float = _duration("24h", 0.001)
    cascade_delay_s: float = _duration("0s")
    dead_letters_max: int = _int(10_000)  # the oldest are trimmed past this


@dataclass(frozen=True)
class CascadeConfig:
    concurrency: int = _int(16, maximum=1024)  # a thread and a connection each
    batch_size: int = _int(500, maximum=10_000)  # one claim (CLAIM_DUE) of more would hold Redis too long
    retry_initial_s: float = _duration("5s", 0.001)
    retry_max_s: float = _duration("10m", 0.001)
    claim_timeout_s: float = _duration("30s", 0.001)
    breaker_failures: int = _int(5)
    breaker_cooldown_s: float = _duration("10s", 0.001)


@dataclass(frozen=True)
class LeaderConfig:
    lease_s: float = _duration("10s", 0.1)


@dataclass(frozen=True)
class EventsConfig:
    max_len: int = _int(100_000, minimum=0)  # 0: no audit stream is written


@dataclass(frozen=True)
class LogConfig:
    level: str = _choice("INFO", *LOG_LEVELS)
    format: str = _choice("text", "text", "json")


@dataclass(frozen=True)
class ServerConfig:
    listen: str = field(default="", metadata={"kind": "listen"})


@dataclass(frozen=True)
class NotifyConfig:
    enabled: bool = False
    channel_prefix: str = field(default="socket.io", metadata={"kind": "channel_prefix"})
    namespace: str = field(default="/", metadata={"kind": "namespace"})
    event: str = field(default="guestLeft", metadata={"kind": "event"})
    fence: bool = True
    ask_before_reap: bool = False
    ask_timeout_s: float = _duration("2s", 0.001)


@dataclass(frozen=True)
class Config:
    redis: RedisConfig = field(default_factory=RedisConfig)
    timing: TimingConfig = field(default_factory=TimingConfig)
    startup: StartupConfig = field(default_factory=StartupConfig)
    auth_service: ServiceConfig = field(
        default_factory=lambda: ServiceConfig(base_url="http://auth-service:3001")
    )
    user_service: ServiceConfig = field(
        default_factory=lambda: ServiceConfig(base_url="http://user-service:3002")
    )
    mongo: MongoConfig = field(default_factory=MongoConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    cascade: CascadeConfig = field(default_factory=CascadeConfig)
    leader: LeaderConfig = field(default_factory=LeaderConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    source: str = "defaults"  # where the file came from, for `reaper config`


SECTIONS = tuple(f.name for f in dataclasses.fields(Config) if f.name != "source")


def load_config(
    path: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """The effective configuration; raises ConfigError on the first bad key."""
    environ = os.environ if environ is None else environ
    file_path = _find_file(path, environ)
    in_file = f"in {file_path}"
    layers = [(_read_toml(file_path) if file_path else {}, in_file),
              (_from_environ(environ), ""),  # each value says its variable (_EnvValue)
              (_nest(overrides or {}), "")]
    values: dict = {}
    for layer, where in layers:
        with _said_where(lambda _key: where):
            _build(layer, source="")  # a bad value is an error even where a later layer overrides it
        _merge(values, layer)
    origins = _origins(layers[0][0], in_file, layers[1][0], layers[2][0])
    with _said_where(lambda key: origins.get(key, "")):  # the checks of keys that go together
        config = _build(values, source=str(file_path) if file_path else "defaults")
        config = _with_signaling_redis_env(config, environ)
        _check_redis_connection(config.redis)
        _check_guest_id_prefix(config.redis)
    return config


@contextmanager
def _said_where(origin_of: Callable[[str], str]):
    """A ConfigError raised inside says where its key's value came from, if it does not yet."""
    try:
        yield
    except ConfigError as exc:
        origin = exc.origin or origin_of(exc.key)
        if origin == exc.origin or type(exc) is not ConfigError:
            raise
        raise ConfigError(exc.key, exc.value, exc.expected, origin) from None


def _origins(file_layer: dict, in_file: str, env_layer: dict, flags: dict) -> dict[str, str]:
    """Where each key's value came from: the file, a variable, or (nothing said) a flag."""
    origins = {f"{section}.{key}": in_file for section, table in file_layer.items()
               if isinstance(table, dict) for key in table}
    origins.update({f"{section}.{key}": _origin(raw) for section, table in env_layer.items()
                    for key, raw in table.items()})
    for section, table in flags.items():
        for key in table:
            origins.pop(f"{section}.{key}", None)
    return origins


def _check_guest_id_prefix(redis: RedisConfig) -> None:
    """An empty prefix would make every users:online entry a guest's and every id a guest id."""
    problem = prefix_problem(redis.guest_id_prefix)
    if problem:
        raise ConfigError("redis.guest_id_prefix", redis.guest_id_prefix, problem)


def _find_file(path, environ) -> Path | None:
    explicit = path or environ.get("REAPER_CONFIG")
    if explicit:
        if not Path(explicit).is_file():
            key = "--config" if path else "REAPER_CONFIG"
            raise ConfigError(key, str(explicit), "a readable TOML file")
        return Path(explicit)
    return next((p for p in DEFAULT_PATHS if p.is_file()), None)


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(str(path), "…", f"valid TOML ({exc})") from None


def _from_environ(environ: Mapping[str, str]) -> dict:
    """``REAPER_<SECTION>_<KEY>`` variables; an unknown one is an error like an unknown key."""
    names = {_env_name(s, k): (s, k) for s in SECTIONS for k in _keys(s)}
    found: dict = {}
    for name, raw in environ.items():
        if not name.startswith("REAPER_") or name == "REAPER_CONFIG":
            continue
        if name not in names:
            raise ConfigError(name, _unknown_value(_env_key_part(name), raw),
                              "a known REAPER_<SECTION>_<KEY> variable")
        section, key = names[name]
        found.setdefault(section, {})[key] = _EnvValue(raw, name)
    return found


def _env_name(section: str, key: str) -> str:
    return f"REAPER_{section}_{key}".upper()


class _EnvValue(str):
    """A value from the environment: still text, converted by the key's kind; ``variable`` is
    its name, for the error that a bad value raises."""

    def __new__(cls, raw: str, variable: str = ""):
        value = super().__new__(cls, raw)
        value.variable = variable
        return value


def _origin(raw: Any) -> str:
    variable = getattr(raw, "variable", "") if isinstance(raw, _EnvValue) else ""
    return f"from {variable}" if variable else ""


def _nest(flat: Mapping[str, Any]) -> dict:
    nested: dict = {}
    for dotted, value in flat.items():
        section, key = dotted.split(".", 1)
        nested.setdefault(section, {})[key] = value
    return nested


def _merge(into: dict, new: dict) -> None:
    for section, table in new.items():
        if isinstance(into.get(section), dict) and isinstance(table, dict):
            into[section].update(table)
        else:
            into[section] = table


def _section_class(section: str):
    return type(getattr(Config(), section))


def _keys(section: str) -> list[str]:
    return [_key_of(f) for f in dataclasses.fields(_section_class(section))]


def _key_of(f: dataclasses.Field) -> str:
    return f.name[:-2] if f.metadata.get("kind") == "duration" else f.name


def _build(values: dict, source: str) -> Config:
    defaults = Config()
    sections = {}
    for section, table in values.items():
        if section not in SECTIONS:
            raise ConfigError(section, _unknown_value(section, table),
                              f"one of the sections {', '.join(SECTIONS)}")
        if not isinstance(table, dict):
            raise ConfigError(section, _masked_text(table), "a table of keys")
        sections[section] = _build_section(section, getattr(defaults, section), table)
    return dataclasses.replace(defaults, source=source, **sections)


def _build_section(section: str, default, table: dict):
    by_key = {_key_of(f): f for f in dataclasses.fields(default)}
    changes = {}
    for key, raw in table.items():
        if key not in by_key:
            raise ConfigError(f"{section}.{key}", _unknown_value(key, raw),
                              f"one of the keys {', '.join(by_key)}")
        f = by_key[key]
        changes[f.name] = _convert(f"{section}.{key}", raw, f)
    return dataclasses.replace(default, **changes)


def _convert(key: str, raw: Any, f: dataclasses.Field) -> Any:
    kind = f.metadata.get("kind") or {bool: "bool", int: "int", float: "float"}.get(f.type, "str")
    try:
        return _CONVERTERS[kind](key, raw, f.metadata)
    except ConfigError as exc:
        raise ConfigError(exc.key, _shown(exc.value, f), redact.scrub(exc.expected), _origin(raw)) from None


class _Hidden:
    """The value a configuration error shows instead of a secret's, or an unknown key's."""

    def __repr__(self) -> str:
        return "***"


HIDDEN = _Hidden()


def _shown(value: Any, f: dataclasses.Field) -> Any:
    """What an error may show of a key's value: nothing of a secret (a URL's, masked), and of
    any other value every URL password and credential-looking text masked."""
    if f.metadata.get("kind") in _URL_KINDS:  # a URL's password is its only secret
        return _masked_text(value)
    if f.metadata.get("secret") or _looks_secret(f.name):
        return HIDDEN
    return _masked_text(value)


def _masked_text(value: Any) -> Any:
    if isinstance(value, str):
        return type(value)(redact.scrub(mask_url(value))) if value else value
    if isinstance(value, (list, tuple)):
        return type(value)(_masked_text(v) for v in value)
    if isinstance(value, dict):
        return {k: HIDDEN if _looks_secret(str(k)) else _masked_text(v) for k, v in value.items()}
    return value


def _unknown_value(name: str, value: Any) -> Any:
    """What an error shows of an unknown key's value (of each key, in an unknown section): nothing
    when its name looks like a secret's, even misspelled ("tokn", "pasword"), else as _masked_text."""
    if _looks_secret(name, fuzzy=True):
        return HIDDEN
    if isinstance(value, dict):
        return {k: _unknown_value(str(k), v) for k, v in value.items()}
    return _masked_text(value)


def _env_key_part(name: str) -> str:
    """REAPER_AUTH_SERVICE_TOKN -> TOKN: the part after a known section, if any."""
    rest = name.removeprefix("REAPER_")
    section = next((s for s in SECTIONS if rest.startswith(s.upper() + "_")), "")
    return rest[len(section) + 1:] if section else rest


# A known key whose name says it holds a secret. An unknown one is judged more broadly
# (any of these word parts, or a near miss of a secret's name), since its value is not needed.
_SECRET_NAME = re.compile(r"token|passw|pwd|secret|credential|api[_-]?key|private[_-]?key", re.IGNORECASE)
_SECRET_PARTS = re.compile(r"pass|pw|tok|secr|cred|auth|key|sig|priv|cookie|session|bearer|jwt|cert",
                           re.IGNORECASE)
_SECRET_WORDS = ("token", "password", "passwd", "secret", "credential", "credentials", "apikey", "key",
                 "auth", "pass", "pwd")


def _looks_secret(name: str, fuzzy: bool = False) -> bool:
    if _SECRET_NAME.search(name):
        return True
    if not fuzzy:
        return False
    parts = [p for p in re.split(r"[^a-z0-9]+", name.lower()) if p]
    return bool(_SECRET_PARTS.search(name)) or any(
        difflib.get_close_matches(p, _SECRET_WORDS, n=1, cutoff=0.75) for p in parts)


def _to_bool(key, raw, meta):
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, _EnvValue) and raw.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(raw, _EnvValue) and raw.strip().lower() in ("false", "0", "no", "off", ""):
        return False
    raise ConfigError(key, raw, "true or false")


def _to_int(key, raw, meta):
    minimum = meta.get("min", 0)
    try:
        value = int(raw) if isinstance(raw, (_EnvValue, int)) and not isinstance(raw, bool) else None
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ConfigError(key, raw, f"a whole number >= {minimum}")
    maximum = meta.get("max", MAX_INT)
    if value > maximum:
        raise ConfigError(key, raw, f"a whole number <= {maximum}")
    return value


def _to_str(key, raw, meta):
    if not isinstance(raw, str):
        raise ConfigError(key, raw, "a string")
    return str(raw)


def _to_token(key, raw, meta):
    """What an Authorization header can carry: httpx refuses other characters when it starts,
    and a secret file's trailing newline is the usual way to get one."""
    value = _to_str(key, raw, meta)
    if not all("!" <= c <= "~" for c in value):
        raise ConfigError(key, raw, "a token of visible ASCII characters, without spaces or a "
                          "newline (did it come from a file that ends with one?), or \"\" for none")
    return value


def _to_choice(key, raw, meta):
    choices = meta["choices"]
    if not isinstance(raw, str) or (raw not in choices and raw.upper() not in choices):
        raise ConfigError(key, raw, f"one of {', '.join(choices)}")
    return str(raw) if raw in choices else raw.upper()


def _to_duration(key, raw, meta):
    try:
        value = parse_duration(float(raw) if _is_number_text(raw) else raw)
    except ValueError:
        value = None
    minimum = meta.get("min", 0)
    if value is None or value < minimum or (minimum > 0 and value == 0):
        raise ConfigError(key, raw, 'a duration like "500ms", "30s", "5m", "24h" or seconds'
                          + _duration_floor(minimum))
    return value


def _duration_floor(minimum: float) -> str:
    if minimum <= 0:
        return ""
    return ", greater than zero" if minimum < 0.01 else f", at least {format_duration(minimum)}"


def _is_number_text(raw) -> bool:
    if not isinstance(raw, _EnvValue):
        return False
    try:
        float(raw)
        return True
    except ValueError:
        return False


def _to_fraction(key, raw, meta):
    try:
        value = float(raw) if not isinstance(raw, bool) else None
    except (TypeError, ValueError):
        value = None
    if value is None or not 0 < value <= 1:
        raise ConfigError(key, raw, "a number greater than 0 and at most 1")
    return value


def _to_table(key, raw, meta):
    if isinstance(raw, _EnvValue):
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, dict) or not value:
            raise ConfigError(key, raw, 'a non-empty JSON object such as {"isGuest": true}')
        return value
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(key, raw, "a non-empty table such as { isGuest = true }")
    return dict(raw)


def _to_url(schemes: tuple[str, ...], empty_means: str):
    def convert(key, raw, meta):
        value = _to_str(key, raw, meta).strip()
        if value == "":
            return value
        if not _is_url(value, schemes):
            expected = f"a URL starting with {' or '.join(s + '://' for s in schemes)}, or \"\" {empty_means}"
            raise ConfigError(key, mask_url(value), expected)
        return value.rstrip("/") if value.startswith("http") else value

    return convert


def _is_url(value: str, schemes: tuple[str, ...]) -> bool:
    """Scheme known, and a host (a path for unix sockets) with a numeric port if any."""
    try:
        parts = urlsplit(value)
        parts.port  # raises ValueError on a bad port
    except ValueError:
        return False
    if parts.scheme not in schemes or not value.startswith(parts.scheme + "://"):
        return False
    return bool(parts.path) if parts.scheme == "unix" else bool(parts.hostname)


def _to_listen(key, raw, meta):
    value = _to_str(key, raw, meta).strip()
    if value == "":
        return value
    try:
        split_host_port(value)
    except ValueError:
        raise ConfigError(key, raw, 'host:port such as "127.0.0.1:9108" or "[::1]:9108", '
                          'or "" to disable') from None
    return value


def split_host_port(address: str) -> tuple[str, int]:
    """("host", port) from "host:port" or "[ipv6]:port"; ValueError when it is neither."""
    host, sep, port = address.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{address!r}: an IPv6 address needs brackets, e.g. [::1]:26379")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 \
            or any(c.isspace() or c in "/@[]" for c in host):
        raise ValueError(f"{address!r} is not host:port")
    return host, int(port)


def _to_host_ports(key, raw, meta):
    expected = 'a list of "host:port" strings (or one comma-separated string), or [] for none'
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ConfigError(key, raw, expected)
    if isinstance(raw, str) and not raw.strip():
        return ()
    try:
        for item in items:
            split_host_port(item)
    except ValueError as exc:
        raise ConfigError(key, raw, f"{expected}; {exc}") from None
    return tuple(item.strip() for item in items)


def _to_name(key, raw, meta):
    value = _to_str(key, raw, meta).strip()
    if not value or any(c.isspace() for c in value):
        raise ConfigError(key, raw, 'a non-empty name without spaces, such as "mymaster"')
    return value


def _to_channel_prefix(key, raw, meta):
    value = _to_str(key, raw, meta)
    if not value or any(c.isspace() for c in value):  # the adapter reads an empty key as "socket.io"
        raise ConfigError(key, raw, 'the adapter\'s non-empty key without spaces, such as "socket.io"')
    return value


def _to_namespace(key, raw, meta):
    value = _to_str(key, raw, meta)
    if not value.startswith("/") or "#" in value or any(c.isspace() for c in value):
        raise ConfigError(key, raw, 'a socket.io namespace starting with "/", such as "/" or "/calls"')
    return value


def _to_event(key, raw, meta):
    value = _to_str(key, raw, meta)
    if not value.strip() or value in RESERVED_EVENTS:
        raise ConfigError(key, raw, "an event name that socket.io does not reserve, such as \"guestLeft\"")
    return value


def _to_readable_file(key, raw, meta):
    value = _to_str(key, raw, meta).strip()
    if value and not _is_readable_file(value):
        raise ConfigError(key, value, 'a readable file, or "" for none')
    return value


def _is_readable_file(path: str) -> bool:
    try:
        with open(path, "rb"):
            return True
    except OSError:  # missing, a directory, no permission
        return False


_CONVERTERS = {
    "bool": _to_bool,
    "int": _to_int,
    "float": _to_fraction,
    "str": _to_str,
    "token": _to_token,
    "choice": _to_choice,
    "duration": _to_duration,
    "fraction": _to_fraction,
    "table": _to_table,
    "channel_prefix": _to_channel_prefix,
    "namespace": _to_namespace,
    "event": _to_event,
    "redis_url": _to_url(("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"),
                         "to use REDIS_HOST / REDIS_PORT"),
    "http_url": _to_url(("http", "https"), "to disable"),
    "mongo_uri": _to_url(("mongodb", "mongodb+srv"), "to disable"),
    "listen": _to_listen,
    "host_ports": _to_host_ports,
    "name": _to_name,
    "readable_file": _to_readable_file,
}


def _with_signaling_redis_env(config: Config, environ: Mapping[str, str]) -> Config:
    """Fill ``redis.url`` from REDIS_HOST / REDIS_PORT / REDIS_PASSWORD when it is not set."""
    password = environ.get("REDIS_PASSWORD", "")
    url = config.redis.url or _url_from_signaling_env(environ)
    parts = urlsplit(url)
    if password and not _passwords_in(url):
        host = parts.netloc.rpartition("@")[2]
        url = parts._replace(netloc=f"{parts.username or ''}:{quote(password, safe='')}@{host}").geturl()
    return dataclasses.replace(config, redis=dataclasses.replace(config.redis, url=url))


_SIGNALING_ENV = " (the signaling service's variable, read because redis.url is not set)"


def _url_from_signaling_env(environ: Mapping[str, str]) -> str:
    # An empty variable is how compose files and unit files say "unset".
    host = environ.get("REDIS_HOST") or "localhost"
    port = (environ.get("REDIS_PORT") or "6379").strip()
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("REDIS_PORT", port, f"a TCP port number (1-65535){_SIGNALING_ENV}")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    url = f"redis://{host}:{port}/0"
    if not _is_url(url, ("redis",)) or urlsplit(url).hostname != host.strip("[]").lower():
        raise ConfigError("REDIS_HOST", host, f"a host name or IP address{_SIGNALING_ENV}")
    return url


_TLS_KEYS = ("tls_ca_file", "tls_cert_file", "tls_key_file")


def _check_redis_connection(redis: RedisConfig) -> None:
    """The keys that only make sense together: TLS keys need rediss://, a key needs its
    certificate, sentinels need a TCP URL (for its password and db; its host is not used)."""
    scheme = redis.scheme
    tls_set = [k for k in _TLS_KEYS if getattr(redis, k)] + ([] if redis.tls_verify else ["tls_verify"])
    if tls_set and scheme != "rediss":
        key = tls_set[0]
        raise ConfigError(f"redis.{key}", getattr(redis, key),
                          f"a rediss:// redis.url (TLS settings do nothing over {scheme}://)")
    if redis.tls_key_file and not redis.tls_cert_file:
        raise ConfigError("redis.tls_key_file", redis.tls_key_file,
                          "redis.tls_cert_file set too: the client certificate of this key")
    _check_tls_files(redis)
    if redis.sentinels and scheme == "unix":
        raise ConfigError("redis.sentinels", list(redis.sentinels),
                          "a redis:// or rediss:// redis.url (its password and db are used "
                          "with the master the sentinels name), not unix://")
    if redis.is_cluster:
        _check_cluster(redis)


def _check_cluster(redis: RedisConfig) -> None:
    """A cluster is reached over TCP, has only database 0, and is not behind sentinels; reaper's
    cascade keys get a hash tag of their own, so the prefix must not bring one."""
    if redis.sentinels:
        raise ConfigError("redis.sentinels", list(redis.sentinels),
                          "[] with redis.cluster (a Redis Cluster fails over by itself; sentinels "
                          "watch a single master)")
    if redis.scheme == "unix":
        raise ConfigError("redis.url", mask_url(redis.url), "a redis:// or rediss:// address of a "
                          "cluster node with redis.cluster = true, not unix://")
    database = urlsplit(redis.url).path.strip("/")
    if database not in ("", "0"):
        raise ConfigError("redis.url", mask_url(redis.url), "database 0 (or none) with redis.cluster: "
                          "a Redis Cluster has only database 0")
    if "{" in redis.reaper_prefix or "}" in redis.reaper_prefix:
        raise ConfigError("redis.reaper_prefix", redis.reaper_prefix,
                          "a prefix without { or } with redis.cluster (reaper adds the hash tags)")


def _check_tls_files(redis: RedisConfig) -> None:
    """Load the certificates now, so a wrong file stops reaper at start, not at connect."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if redis.tls_ca_file:
        try:
            context.load_verify_locations(cafile=redis.tls_ca_file)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError("redis.tls_ca_file", redis.tls_ca_file,
                              f"PEM CA certificates ({exc})") from None
    if redis.tls_cert_file:
        try:  # a callable password: an encrypted key fails here instead of prompting
            context.load_cert_chain(redis.tls_cert_file, redis.tls_key_file or None, password=lambda: b"")
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError("redis.tls_cert_file", redis.tls_cert_file,
                              f"a PEM certificate whose unencrypted private key is in "
                              f"redis.tls_key_file or in the same file ({exc})") from None


def mask_url(url: str) -> str:
    """The URL with its password (if any) replaced by ***, and any secret in its query."""
    url = _QUERY_PASSWORD.sub(r"\1***", url)  # redis-py also reads ?password=
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # e.g. an unclosed "[": mask whatever sits between "://user:" and "@"
        return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)
    if not password:
        return url
    userinfo = f"{parts.username or ''}:***"
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{userinfo}@{host}").geturl()


# password= (redis-py reads it), and any other query parameter named like a secret (?token=).
_QUERY_PASSWORD = re.compile(r"([?&][\w.-]*(?:passw(?:or)?d|pwd|token|secret|api[_-]?key|apikey|credential|"
                             r"signature)[\w.-]*=)[^&#]*", re.IGNORECASE)


def _passwords_in(url: str) -> list[str]:
    """Each password a URL carries, as written (percent-encoded) and decoded."""
    parts = urlsplit(url)
    written = [parts.password] if parts.password else []
    written += [m.group(0).split("=", 1)[1] for m in _QUERY_PASSWORD.finditer(url)]
    return [form for w in written if w for form in (w, unquote(w), quote(unquote(w), safe=""))]


def secrets_of(config: Config) -> list[str]:
    """Every secret value in the configuration, for the log redactor: secret keys' values, the
    password of every URL (base_url too), and the Basic credential httpx makes of a URL's userinfo."""
    found = []
    for section in SECTIONS:
        obj = getattr(config, section)
        for f in dataclasses.fields(obj):
            found += _secrets_in(getattr(obj, f.name), f)
    return list(dict.fromkeys(s for s in found if s))


def _secrets_in(value: Any, f: dataclasses.Field) -> list[str]:
    values = value if isinstance(value, (list, tuple)) else [value]
    texts = [v for v in values if isinstance(v, str) and v]
    if f.metadata.get("kind") not in _URL_KINDS and (f.metadata.get("secret") or _looks_secret(f.name)):
        return texts
    found = []
    for text in texts:
        if "://" in text:
            found += _passwords_in(text) + _basic_credentials(text)
    return found


def _basic_credentials(url: str) -> list[str]:
    """base64("user:password"): what an Authorization: Basic header (which httpx makes of a URL's
    userinfo) carries, and a reply may echo."""
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:
        return []
    if not password:
        return []
    return [base64.b64encode(f"{unquote(user or '')}:{unquote(password)}".encode()).decode()]


_URL_KINDS = ("redis_url", "http_url", "mongo_uri")


def _masked(value: str, is_url: bool) -> str:
    if is_url:
        return mask_url(value)
    return "***" if value else ""


def as_masked_dict(config: Config) -> dict:
    """The effective configuration as TOML-shaped data, secrets masked: secret keys' values, and
    the password of every URL whatever its key (base_url too)."""
    out: dict = {}
    for section in SECTIONS:
        obj = getattr(config, section)
        out[section] = {_key_of(f): _masked_value(getattr(obj, f.name), f) for f in dataclasses.fields(obj)}
    return out


def _masked_value(value: Any, f: dataclasses.Field) -> Any:
    if f.metadata.get("secret") or _looks_secret(f.name):
        if isinstance(value, str):
            return _masked(value, is_url=f.metadata.get("kind") in _URL_KINDS)
        return "***" if value else value
    if f.metadata.get("kind") == "duration":
        return format_duration(value)
    if isinstance(value, str):
        return mask_url(value) if "://" in value else value
    if isinstance(value, tuple):
        return [mask_url(v) if isinstance(v, str) and "://" in v else v for v in value]  # as TOML writes it
    return value
