"""The exceptions reaper raises, and which of them are worth retrying.

    ReaperError
    ├── ConfigError            bad configuration: exit 2, before anything is touched
    │   ├── WrongKeyType       a key reaper writes holds another Redis type: nothing touched
    │   └── AuditTrailFull     the audit trail stream has used its last entry id
    ├── RedisUnavailable       Redis cannot be reached: exit 3
    │   └── RedisRefused       Redis answers but refuses writes (READONLY, OOM, NOPERM...)
    └── StepError              a cascade step failed
        ├── TransientError     5xx, timeout, connection error: retried later
        └── PermanentError     other 4xx, refused request: dead letter at once

Retry code reads ``except TransientError``; nothing else decides retryability.
"""

# The exit codes of the contract: done; done but cascades wait for a retry; usage or
# configuration; Redis unreachable.
EXIT_OK, EXIT_PENDING, EXIT_USAGE, EXIT_REDIS = 0, 1, 2, 3


class ReaperError(Exception):
    """Base of every error reaper raises on purpose."""


class ConfigError(ReaperError):
    """A configuration key has a value reaper cannot use. ``origin`` says where the value came
    from, when that is known: "from REAPER_TIMING_PING_INTERVAL", "in /etc/reaper/reaper.toml"."""

    origin = ""

    def __init__(self, key: str, value: object, expected: str, origin: str = ""):
        self.key, self.value, self.expected, self.origin = key, value, expected, origin
        where = f" ({origin})" if origin else ""
        super().__init__(f"config: {key} = {value!r}{where}: expected {expected}")


class WrongKeyType(ConfigError):
    """A key reaper writes holds another Redis type, so every script writing it would fail:
    another writer uses it, or a setting names someone else's key. Raised before the first
    write (each script checks its keys' types first), so nothing was changed."""

    def __init__(self, key: str | None, found: str | None, wanted: str | None, said: str = ""):
        """``said``: Redis's own words, when a command (not a script) refused a key it does not name."""
        if key is None:
            message = f"redis: {said}; `reaper check` names the key"
        else:
            message = (f"redis: {key} holds a {found}, not a {wanted} (another writer uses it, or a "
                       "redis.* setting names someone else's key); nothing was changed")
        ReaperError.__init__(self, message)
        self.key, self.value, self.expected = "redis.reaper_prefix", key, wanted
        self.redis_key, self.found, self.wanted = key, found, wanted


class AuditTrailFull(ConfigError):
    """The audit trail stream has used the last possible entry id (someone added an entry with the
    highest id by hand), so XADD refuses every decision record. The take scripts write theirs
    before anything else (reaper/store/scripts.py), so a sweep on a single Redis stops before it
    reaps anyone."""

    def __init__(self):
        ReaperError.__init__(self, (
            "redis: reaper's audit trail stream (<reaper_prefix>events, which `reaper events` reads) "
            "has used the last possible entry id, so it takes no more decision records and no guest is "
            "reaped without one; delete that stream (only the audit trail is lost) or set "
            "events.max_len = 0 to write none"))
        self.key, self.value, self.expected = "events.max_len", None, "a stream that takes new entries"


class RedisUnavailable(ReaperError):
    """Redis did not answer; nothing can be decided without it."""


class RedisRefused(RedisUnavailable):
    """Redis answers but refuses to write (a read-only replica, maxmemory reached, an ACL, a
    failed save): nothing can be done until it accepts writes again."""


class StepError(ReaperError):
    """A cascade step did not succeed."""


class TransientError(StepError):
    """Worth retrying later: the service may come back."""


class PermanentError(StepError):
    """Retrying cannot help: the request itself was refused."""
