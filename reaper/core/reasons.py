"""Why a guest was reaped: the reason codes of docs/design.md, the cascade, as logged, counted and sent."""

HEARTBEAT_TIMEOUT = "heartbeat_timeout"
PING_TIMEOUT = "ping_timeout"
ORPHAN = "orphan"
MALFORMED = "malformed"
STARTUP_PURGE = "startup_purge"

ALL = (HEARTBEAT_TIMEOUT, PING_TIMEOUT, ORPHAN, MALFORMED, STARTUP_PURGE)
