"""The rules and types everything else is built on, and nothing else: what a guest id is, what a
record says and when it is stale, what an intent holds, the configuration, key names, durations,
reasons, counters, redaction. Pure: no module here talks to Redis, HTTP or MongoDB, logs, or
reads a clock it was not handed, so each can be tested with values alone."""
