"""What a `reaper run --once` leaves for Prometheus, which cannot scrape a process that has
exited: reaper's metrics and the run's own (exit code, end time, duration), written to a
node-exporter textfile and/or pushed to a Pushgateway when the run ends, failed or not.

Neither changes the run's exit code: a textfile that cannot be written or a Pushgateway that
does not answer is one WARNING, and the next run tries again.
"""

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from loguru import logger
from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

from reaper.core.errors import EXIT_PENDING, EXIT_REDIS, EXIT_USAGE
from reaper.core.errors import ConfigError, RedisUnavailable
from reaper.ops.metrics import Metrics
from reaper.core.redact import scrub

JOB = "reaper"  # the Pushgateway's job label
PUSH_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Outlets:
    """Where the metrics go: a textfile path, a Pushgateway URL (with this instance label)."""

    metrics_file: str | None = None
    pushgateway: str | None = None
    instance: str = ""

    def __bool__(self) -> bool:
        return bool(self.metrics_file or self.pushgateway)


def recorded(run: Callable[[], int], metrics: Metrics, outlets: Outlets,
             clock: Callable[[], float] = time.time) -> int:
    """``run()``'s exit code; its metrics left in ``outlets`` when it returns or raises. The
    exception (RedisUnavailable: exit 3, ConfigError: exit 2, a bug: Python's 1) goes on."""
    started, code = clock(), EXIT_PENDING
    try:
        code = run()
        return code
    except RedisUnavailable:
        code = EXIT_REDIS
        raise
    except ConfigError:
        code = EXIT_USAGE
        raise
    finally:
        leave(with_run(metrics, code, started, clock()), outlets)


def with_run(metrics: Metrics, exit_code: int, started: float, ended: float) -> CollectorRegistry:
    """reaper's metrics and the run's own, in one registry."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(metrics.registry)
    for name, help_, value in (
            ("reaper_last_run_exit_code", "Exit code of the last `reaper run --once`: 0 done, 1 "
             "cascades wait for a retry (0 with --pending-ok), 2 configuration, 3 Redis.", exit_code),
            ("reaper_last_run_timestamp_seconds", "When the last `reaper run --once` ended (Unix "
             "time, this host's clock).", ended),
            ("reaper_last_run_duration_seconds", "How long the last `reaper run --once` took.",
             max(0.0, ended - started))):
        Gauge(name, help_, registry=registry).set(value)
    return registry


def leave(registry: CollectorRegistry, outlets: Outlets) -> None:
    if outlets.metrics_file:
        _write(registry, outlets.metrics_file)
    if outlets.pushgateway:
        _push(registry, outlets.pushgateway, outlets.instance)


def _write(registry: CollectorRegistry, path: str) -> None:
    """A temporary file beside ``path``, renamed over it: a reader sees the old file or the new."""
    try:
        write_to_textfile(path, registry)
    except OSError as exc:
        logger.warning("Metrics: could not write {}: {}", path, exc.strerror or exc)
        return
    logger.debug("Metrics: written to {}", path)


def _push(registry: CollectorRegistry, url: str, instance: str) -> None:
    try:
        push_to_gateway(url, job=JOB, registry=registry, grouping_key={"instance": instance},
                        timeout=PUSH_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, the run's outcome stands
        logger.warning("Metrics: push to {} failed: {}: {}", scrub(url), type(exc).__name__, scrub(str(exc)))
        return
    logger.debug("Metrics: pushed to {} (job={}, instance={})", scrub(url), JOB, instance)


# -- checked when the command line is read, before the run touches anything ----------------------

def metrics_file_problem(path: str) -> str | None:
    """Why ``path`` cannot take the textfile (its directory missing or not writable), or None."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return "is a directory"
    if not os.path.isdir(folder):
        return f"its directory {folder} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"its directory {folder} is not writable (the file is written beside it, then renamed)"
    return None


def pushgateway_problem(url: str) -> str | None:
    """Why ``url`` is no Pushgateway address (http[s]://host[:port][/path], or host:port), or None."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme!r}: expected http or https"
    try:
        parts.port  # noqa: B018 - raises on a port that is no number
    except ValueError as exc:
        return str(exc)
    if not parts.hostname:
        return "no host"
    if parts.query or parts.fragment:
        return "a query or fragment; give the base URL"
    return None


def default_instance() -> str:
    return socket.gethostname()
