"""The exceptions reaper raises, and which of them are worth retrying.

    ReaperError
    ├── ConfigError            bad configuration: exit 2, before anything is touched
    ├── RedisUnavailable       Redis cannot be reached: exit 3
    └── StepError              a cascade step failed
        ├── TransientError     5xx, timeout, connection error: retried later
        └── PermanentError     other 4xx, refused request: dead letter at once

Retry code reads ``except TransientError``; nothing else decides retryability.
"""


class ReaperError(Exception):
    """Base of every error reaper raises on purpose."""


class ConfigError(ReaperError):
    """A configuration key has a value reaper cannot use."""

    def __init__(self, key: str, value: object, expected: str):
        self.key, self.value, self.expected = key, value, expected
        super().__init__(f"config: {key} = {value!r}: expected {expected}")


class RedisUnavailable(ReaperError):
    """Redis did not answer; nothing can be decided without it."""


class StepError(ReaperError):
    """A cascade step did not succeed."""


class TransientError(StepError):
    """Worth retrying later: the service may come back."""


class PermanentError(StepError):
    """Retrying cannot help: the request itself was refused."""
