"""The `reaper` command: parse, load the configuration, set up logging, call one function."""

import gc
import json
import os
import re
import sys

import click
import redis
from loguru import logger

from reaper.store import deadletters
from reaper.ops import lastrun
from reaper import logs
from reaper.store import pause as pausing
from reaper.app import purge as purging
from reaper.core import redact
from reaper.app.check import check as run_check
from reaper.safety.authority import wait_for_ack
from reaper.core.config import as_masked_dict, load_config, secrets_of
from reaper.app.context import Context
from reaper.app.daemon import run_daemon, run_once
from reaper.core.errors import EXIT_REDIS, EXIT_USAGE
from reaper.core.durations import parse_duration
from reaper.core.errors import ConfigError, RedisRefused, RedisUnavailable
from reaper.core.keys import Keys
from reaper.ops.monitor import Monitor
from reaper.ops.sdnotify import Notifier
from reaper.signaling.servers import SignalingCluster
from reaper.store.client import REDIS_DOWN, connect, describe_target, ping, redis_now, refusals
from reaper.terminal import progress_on

config_option = click.option(
    "--config", "config_path", metavar="PATH", type=click.Path(dir_okay=False),
    help="TOML file (else $REAPER_CONFIG, ./reaper.toml, /etc/reaper/reaper.toml).")
dry_run_option = click.option("--dry-run", is_flag=True, help="Read and report; write nothing anywhere.")


def _load(config_path, **overrides):
    """The configuration and logging, or exit 2 naming the bad key."""
    flat = {k: v for k, v in overrides.items() if v}
    try:
        config = load_config(config_path, os.environ, flat)
    except ConfigError as exc:
        click.echo(logs.error_line(f"reaper: {exc}"), err=True)
        sys.exit(EXIT_USAGE)
    logs.configure(config.log.level, config.log.format, secrets_of(config))
    return config


def _exit_usage(exc: ConfigError) -> None:
    """A setting found wrong only when used (server.listen taken, redis.online_key naming no
    hash): exit 2, as when the file is read."""
    click.echo(logs.error_line(f"reaper: {exc}"), err=True)
    sys.exit(EXIT_USAGE)


def _exit_unreachable(exc: Exception) -> None:
    """Exit 3 with one line: Redis unreachable, or refusing writes (RedisRefused)."""
    logger.error("{}: {}", "Redis refuses writes" if isinstance(exc, RedisRefused) else "Redis unreachable", exc)
    sys.exit(EXIT_REDIS)


def _reach(open_, config):
    """open_(config); exit 3 when it must reach Redis and cannot (a cluster client asks its nodes
    at once)."""
    try:
        return open_(config)
    except RedisUnavailable as exc:
        _exit_unreachable(exc)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="reaper")
def cli():
    """Remove dead VOIP guests: stale Redis records, ghosts in users:online, and their
    users in the auth-service and MongoDB, without touching live guests or registered users."""


def _checked(problem_of):
    """A click callback: the option's value, or a usage error (exit 2) saying what is wrong."""

    def check(ctx, param, value):
        problem = None if value is None else problem_of(value)
        if problem:
            raise click.BadParameter(f"{value!r}: {problem}", ctx, param)
        return value

    return check


@cli.command()
@config_option
@click.option("--once", is_flag=True, help="One sweep, one cleanup, one pass over due cascades; then exit.")
@dry_run_option
@click.option("--force", is_flag=True, help="Lift the mass-expiry limit for one sweep.")
@click.option("--pending-ok", is_flag=True,
              help="With --once: cascades left to retry at the next run are no failure: exit 0, "
                   "not 1 (for cron and Kubernetes CronJobs).")
@click.option("--metrics-file", metavar="PATH", callback=_checked(lastrun.metrics_file_problem),
              help="With --once: write the metrics to PATH when the run ends, failed or not, in "
                   "node-exporter's textfile format (name it *.prom), atomically.")
@click.option("--pushgateway", metavar="URL", callback=_checked(lastrun.pushgateway_problem),
              help="With --once: push the metrics to this Pushgateway when the run ends, failed or "
                   f"not, as job={lastrun.JOB!r}. A failed push is a warning; the exit code stays.")
@click.option("--push-instance", metavar="NAME", default=lastrun.default_instance,
              show_default="this host's name",
              help="The instance label of the push (a fixed name for a CronJob, whose pods get new "
                   "names every run).")
def run(config_path, once, dry_run, force, pending_ok, metrics_file, pushgateway, push_instance):
    """Run the reaper: the startup step, then a sweep every heartbeat_interval, retention and
    stats every cleanup_interval, and cascade retries as they fall due. Stops cleanly on
    SIGTERM/SIGINT.

    Exit codes: 0 done; 1 some cascade steps wait for retry (with --once --pending-ok: 0 unless
    a retention call failed too); 2 configuration error (or a key reaper writes holds another
    Redis type, or its audit trail takes no more entries); 3 Redis unreachable or refusing
    writes."""
    outlets = lastrun.Outlets(metrics_file, pushgateway, push_instance)
    if not once and (outlets or pending_ok):
        raise click.UsageError("--pending-ok, --metrics-file and --pushgateway are for --once; the "
                               "daemon serves its metrics at [server] listen's /metrics")
    config = _load(config_path, **{"safety.dry_run": dry_run})
    try:
        sys.exit(_once(config, force, pending_ok, outlets) if once else run_daemon(config, force))
    except ConfigError as exc:  # found only when used: server.listen already taken, say
        _exit_usage(exc)
    except RedisUnavailable as exc:
        _exit_unreachable(exc)


def _once(config, force: bool, pending_ok: bool, outlets: lastrun.Outlets) -> int:
    monitor = Monitor(config, Notifier({}))
    return lastrun.recorded(lambda: run_once(config, force, progress=progress_on(), monitor=monitor,
                                             pending_ok=pending_ok), monitor.metrics, outlets)


@cli.command()
@config_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@dry_run_option
def purge(config_path, yes, dry_run):
    """Delete ALL guest state now: every guest record and session key, every guest entry of
    users:online (never registered users), and all guests in the auth-service, user-service
    and MongoDB. Use it when no signaling server holds live guests."""
    config = _load(config_path, **{"safety.dry_run": dry_run})
    ask = not (yes or dry_run)
    if ask and not sys.stdin.isatty():
        raise click.UsageError("not on a terminal: pass --yes to confirm the purge")
    ctx = _reach(Context.open, config)
    ctx.progress = progress_on()  # None unless stderr is a terminal
    try:
        with refusals():  # a write Redis refuses, a key of the wrong type: one line, exit 3 or 2
            ping(ctx.client)
            if ask:  # names the Redis it will purge: with sentinels, the master they name now
                click.confirm(f"Delete all guest state in {describe_target(ctx.client)} and the "
                              "databases?", abort=True)
            purging.purge(ctx)
            ctx.drain()
            pending = ctx.pending()
    except ConfigError as exc:
        _exit_usage(exc)
    except (RedisUnavailable, *REDIS_DOWN) as exc:
        _exit_unreachable(exc)
    finally:
        ctx.close()
    sys.exit(1 if pending and not dry_run else 0)


@cli.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@click.option("--watch", "watch_s", is_flag=False, flag_value="2s", default=None, metavar="[INTERVAL]",
              callback=lambda *args: _duration('"2s", "500ms", "1m"')(*args),  # defined below
              help="Report again every INTERVAL (default 2s) until Ctrl-C; redrawn on a terminal.")
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="With --watch: stop after this many reports.")
def stats(config_path, as_json, watch_s, count):
    """Guests now (total, responsive, unresponsive), stale and orphaned ones, registered users
    online, pending and dead cascades, leader and pause. Reads only. With --watch, again and
    again: redrawn in place on a terminal, one report after the other (with --json one object
    per line) when piped."""
    from reaper.app import stats as statistics
    from reaper import terminal

    if count is not None and watch_s is None:
        raise click.UsageError("--count goes with --watch")
    config = _load(config_path)
    ctx = _reach(Context.open, config)

    def report() -> str:
        found = statistics.collect(ctx)
        if as_json:
            return json.dumps(found, sort_keys=True)
        if watch_s is None:
            return statistics.as_text(found)
        return _watch_header(watch_s) + statistics.as_text(found) + "\n"  # a blank line between reports

    try:
        with refusals():
            ping(ctx.client)
            redraw = not as_json and sys.stdout.isatty()
            terminal.repeat(report, watch_s or 0, 1 if watch_s is None else count, redraw, click.echo)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends
    except ConfigError as exc:
        _exit_usage(exc)
    except (RedisUnavailable, *REDIS_DOWN) as exc:
        _exit_unreachable(exc)
    except redis.ResponseError as exc:
        _exit_refused(exc)
    finally:
        ctx.close()


def _watch_header(interval_s: float) -> str:
    from datetime import datetime, timezone

    from reaper.core.durations import format_duration

    moment = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"Every {format_duration(interval_s)}: {moment} (Ctrl-C stops)\n"


def _duration(examples: str):
    """A click callback: the option's duration in seconds (None stays None), at least 1ms."""
    def convert(_ctx, _param, value):
        if value is None:
            return None
        try:
            seconds = parse_duration(value)
        except ValueError:
            seconds = 0
        if seconds < 0.001:
            raise click.BadParameter(f"{value!r}: expected a duration like {examples}, at least 1ms")
        return seconds

    return convert


@cli.command()
@config_option
@click.option("--for", "for_s", metavar="DURATION", callback=_duration('"30s", "10m", "2h"'),
              help="Resume by itself after this long (e.g. 30m); without it, until `reaper resume`.")
@click.option("--reason", default="", help="Why; shown in the replicas' logs and by `reaper stats`.")
@click.option("--wait", "wait_s", metavar="DURATION", default="10s", show_default=True,
              callback=_duration('"10s", "1m"'),
              help="How long to wait for the leader to acknowledge the pause.")
@click.option("--no-wait", is_flag=True, help="Return once the pause is written; wait for no one.")
def pause(config_path, for_s, reason, wait_s, no_wait):
    """Pause every replica on this Redis. Work in flight stops at its next call (within 2 s:
    the calls already sent finish, nothing new starts; cascades stay recorded, due at once) and
    no job runs until `reaper resume` (`reaper run --once` too).

    Returns once the leader has acknowledged the pause (`Acknowledged by web-1:4242`). When none
    does within --wait, or no replica holds the lease, it says it could not confirm, with a
    WARNING, and exits 0 all the same: the pause is set, and every replica honours it."""
    config = _load(config_path)
    state, ack = _on_redis(config, lambda client, keys: _pause(client, keys, for_s, reason,
                                                               None if no_wait else wait_s))
    click.echo(f"Paused {state.describe()}" if state else "Paused, and already over")
    if ack is not None and ack.by is not None:
        click.echo(f"Acknowledged by {ack.by}, the leader: it starts no new call while paused")
    elif ack is not None:
        logger.warning("Pause: {} (is a reaper running?); the pause is set all the same",
                       f"no leader acknowledged within {wait_s:g}s" if ack.leader else
                       "no replica holds the leader lease, so none acknowledged")


def _pause(client, keys, for_s, reason, wait_s):
    """The pause written, and the leader's acknowledgement when waited for (None: not waited)."""
    state = pausing.pause(client, keys, for_s, reason=reason)
    if state is None or wait_s is None:
        return state, None
    return state, wait_for_ack(client, keys, state.identity, wait_s)


@cli.command()
@config_option
def resume(config_path):
    """Lift `reaper pause`: the replicas work again from their next job."""
    config = _load(config_path)
    was_paused = _on_redis(config, pausing.resume)
    click.echo("Resumed" if was_paused else "Not paused; nothing to do")


def _on_redis(config, action):
    """action(client, keys) on a fresh connection; exit 3 when Redis is unreachable."""
    client = _reach(connect, config)
    try:
        with refusals():
            ping(client)
            return action(client, Keys.from_config(config.redis))
    except ConfigError as exc:  # a reaper key of the wrong type (WrongKeyType)
        _exit_usage(exc)
    except (RedisUnavailable, *REDIS_DOWN) as exc:
        _exit_unreachable(exc)
    finally:
        client.close()


@cli.command()
@config_option
@click.option("--user", "user_id", metavar="ID", help="Only this guest's records (its userId).")
@click.option("--since", "since_s", metavar="DURATION", callback=_duration('"30m", "2h", "7d"'),
              help="Only records of the last DURATION (Redis time), e.g. 2h.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1),
              help="Show at most this many, newest first.")
def events(config_path, user_id, since_s, as_json, limit):
    """The audit trail: who removed which guest, when and why. One decision record per reaped
    guest, newest first: its reason (heartbeat_timeout, ping_timeout, orphan, malformed) and
    what the sweep observed (heartbeat age, missed pings, the malformed record's problem).
    Kept in the stream <reaper_prefix>events, about events.max_len of them. Reads only.
    Entries it cannot read are skipped and counted ("N entries unreadable, skipped"; with
    --json a last line {"unreadable": N})."""
    from reaper.store import events as audit

    config = _load(config_path)
    found = _reading(config, lambda client, keys: audit.EventStream(client, keys, config.events.max_len)
                     .query(redis_now(client), since_s, user_id, limit))
    if as_json:  # no JSON lines for no records, not even an empty one
        if found.records or found.unreadable:
            click.echo(audit.as_json_lines(found.records, found.unreadable))
    else:
        click.echo(audit.as_text(found.records, found.unreadable))


def _reading(config, action):
    """_on_redis for the commands that read reaper's own keys: a key of another type is a
    configuration error (exit 2), any other refusal by Redis exit 3; one line, no traceback."""
    try:
        return _on_redis(config, action)
    except ConfigError as exc:
        _exit_usage(exc)
    except redis.ResponseError as exc:
        _exit_refused(exc)


def _exit_refused(exc: Exception) -> None:
    """Redis answered with an error: a key changed type meanwhile (exit 2, as a key of another
    type is), or it refuses us, e.g. an ACL (exit 3: Redis cannot be used)."""
    click.echo(f"reaper: Redis refused: {redact.printable(str(exc))}", err=True)
    sys.exit(EXIT_USAGE if str(exc).startswith("WRONGTYPE") else EXIT_REDIS)


@cli.group(name="dead-letters")
def dead_letters():
    """Cascades that failed for good (a request refused with a 4xx, or still failing after
    safety.cascade_max_age): list them, replay them, or drop them."""


@dead_letters.command(name="list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1),
              help="Show at most this many, newest first.")
def list_dead_letters(config_path, as_json, limit):
    """List dead letters, newest first. Each shows its cascade id, user, reason, age, how
    long it has been dead, attempts, and the last error of each step that failed. A letter that
    cannot be read is listed by its id only (drop it), and counted ("unreadable"). Reads only."""
    config = _load(config_path)
    found = _reading(config, lambda client, keys: deadletters.DeadLetters(client, keys).listing(limit))
    click.echo(json.dumps(found, sort_keys=True) if as_json else deadletters.as_text(found))


def _one_or_all(letter_id, every) -> str | None:
    if bool(letter_id) == every:
        raise click.UsageError("give one dead letter's ID, or --all")
    return letter_id


@dead_letters.command(name="retry")
@config_option
@click.argument("letter_id", metavar="[ID]", required=False)
@click.option("--all", "every", is_flag=True, help="Every dead letter.")
def retry_dead_letters(config_path, letter_id, every):
    """Replay dead letters. Moves the newest letter with this cascade ID (as `reaper
    dead-letters list` shows it, e.g. guest:guest_6f1c2a9e), or --all of them, back to the
    pending cascades: attempts start again from 0, due now. The daemon's next cascade run
    takes them, and the liveness check still spares a guest that is back. A purge's letter
    (cleanup-all, delete every guest) is left, and the reason said, while a signaling server is
    attached: the tier holds live guests. Exit 0 when every letter chosen was moved, 1 when
    some were left (refused on a live tier, pending already, unreadable, or no such ID)."""
    cascade_id = _one_or_all(letter_id, every)
    config = _load(config_path)
    outcome = _reading(config, lambda client, keys: deadletters.DeadLetters(
        client, keys, SignalingCluster(client, config.notify)).retry(cascade_id))
    click.echo("\n".join(outcome.lines()))
    sys.exit(0 if outcome.complete else 1)


@dead_letters.command(name="drop")
@config_option
@click.argument("letter_id", metavar="[ID]", required=False)
@click.option("--all", "every", is_flag=True, help="Every dead letter.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def drop_dead_letters(config_path, letter_id, every, yes):
    """Delete dead letters for good. Removes the newest letter with this cascade ID, or --all
    of them: their remaining steps will never run. Asks on a terminal; --yes skips the
    question."""
    cascade_id = _one_or_all(letter_id, every)
    config = _load(config_path)
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("not on a terminal: pass --yes to confirm")
        what = f"the dead letter {cascade_id}" if cascade_id else "every dead letter"
        click.confirm(f"Drop {what} for good? Its remaining steps will never run", abort=True)
    outcome = _reading(config, lambda client, keys: deadletters.DeadLetters(client, keys).drop(cascade_id))
    click.echo("\n".join(outcome.lines()))
    sys.exit(0 if outcome.complete else 1)


@cli.command()
@config_option
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object: each check's status, what it tried, its error and latency.")
def check(config_path, as_json):
    """Is Redis reachable? Are the auth-service and user-service healthy (GET /health)? Does
    MongoDB answer? One line each; a FAIL says what it tried (the URL, credentials masked).
    Exit 3 when Redis fails, 1 when another does."""
    from reaper.app.check import as_json as check_json

    config = _load(config_path)
    lines, code = run_check(config)
    if as_json:
        click.echo(json.dumps(check_json(lines, code)))
    else:
        for line in lines:
            click.echo(str(line))
    sys.exit(code)


@cli.command()
@click.option("--duration", "duration_s", default=20.0, show_default=True, metavar="SECONDS",
              type=click.FloatRange(min=5, max=3600), help="How long guests come and go before the summary.")
def demo(duration_s):
    """See reaper work, with nothing configured: starts a private redis-server (from PATH),
    stand-ins for the auth-service and user-service, and a simulated signaling server whose
    guests heartbeat, drop off, freeze, or were left behind by a crash; runs the real `reaper
    run` against them with timings scaled down (heartbeat 1s, timeout 6s), shows what it does,
    then a summary. Exit 0 when every dead guest was reaped and no live guest or registered
    user was touched, 1 otherwise, 3 without redis-server. Leaves nothing running or behind."""
    from reaper.demo import run_demo

    sys.exit(run_demo(duration_s))


@cli.command()
@config_option
@click.option("--url", metavar="URL",
              help="Ask this URL (a bare http://host:port means its /healthz) instead of server.listen's.")
@click.option("--timeout", "timeout_s", default="5s", show_default=True,
              callback=_duration('"2s" or "500ms"'),
              help="Give up after this long.")
def health(config_path, url, timeout_s):
    """Ask a running `reaper run` whether it is healthy: GET /healthz on server.listen (or
    --url). Prints one line; exit 0 on 200, 1 otherwise. Made for a container HEALTHCHECK."""
    from reaper.app import probe

    try:
        target = probe.with_health_path(url) if url else _health_url(_load(config_path))
    except ValueError as exc:
        raise click.UsageError(str(exc))
    found = probe.probe(target, timeout_s)
    click.echo(found.line)
    sys.exit(0 if found.healthy else 1)


def _health_url(config) -> str:
    from reaper.app.probe import url_for_listen

    if not config.server.listen:
        raise click.UsageError("server.listen is empty, so no /healthz is served: set it "
                               "(REAPER_SERVER_LISTEN=127.0.0.1:9108) or pass --url")
    return url_for_listen(config.server.listen)


@cli.command(name="config")
@config_option
def show_config(config_path):
    """Print the effective configuration (file, environment, defaults), secrets masked."""
    config = _load(config_path)
    click.echo(f"# source: {config.source}")
    for section, table in as_masked_dict(config).items():
        click.echo(f"\n[{section}]")
        for key, value in table.items():
            click.echo(f"{key} = {_toml(value)}")


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


# CPython collects its youngest generation every 700 net allocations of container objects. A
# sweep judges a page of a thousand records at a time, each page's lists and tuples alive until
# the page is done: at 1M guests the collector ran ~1,700 times, for ~0.3 s of CPU (a tenth of
# the sweep's), and found next to nothing, the pages being freed by their reference counts. At
# this threshold it runs a few times a sweep; cycles are still collected, a little later.
GC_YOUNG_THRESHOLD = 50_000


def main() -> None:
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    # Names that are no UTF-8 are text with lone surrogates (reaper/core/names.py): shown as escapes,
    # as the log's stderr does, never a crash of `reaper dead-letters`.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    cli(prog_name="reaper")
