"""The `reaper` command: parse, load the configuration, set up logging, call one function."""

import json
import os
import sys

import click
from loguru import logger

from . import logs
from . import purge as purging
from .check import check as run_check
from .config import as_masked_dict, load_config, mask_url, secrets_of
from .context import Context
from .daemon import EXIT_REDIS, EXIT_USAGE, run_daemon, run_once
from .errors import ConfigError, RedisUnavailable
from .store import REDIS_DOWN, ping

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
        click.echo(f"reaper: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    logs.configure(config.log.level, config.log.format, secrets_of(config))
    return config


def _exit_unreachable(exc: Exception) -> None:
    logger.error("Redis unreachable: {}", exc)
    sys.exit(EXIT_REDIS)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="reaper")
def cli():
    """Remove dead VOIP guests: stale Redis records, ghosts in users:online, and their
    users in the auth-service and MongoDB, without touching live guests or registered users."""


@cli.command()
@config_option
@click.option("--once", is_flag=True, help="One sweep, one cleanup, one pass over due cascades; then exit.")
@dry_run_option
@click.option("--force", is_flag=True, help="Lift the mass-expiry limit for one sweep.")
def run(config_path, once, dry_run, force):
    """Run the reaper: the startup step, then a sweep every heartbeat_interval, retention and
    stats every cleanup_interval, and cascade retries as they fall due. Stops cleanly on
    SIGTERM/SIGINT.

    Exit codes: 0 done; 1 some cascade steps wait for retry; 2 configuration error;
    3 Redis unreachable."""
    config = _load(config_path, **{"safety.dry_run": dry_run})
    try:
        sys.exit(run_once(config, force) if once else run_daemon(config, force))
    except RedisUnavailable as exc:
        _exit_unreachable(exc)


@cli.command()
@config_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@dry_run_option
def purge(config_path, yes, dry_run):
    """Delete ALL guest state now: every guest record and session key, every guest entry of
    users:online (never registered users), and all guests in the auth-service, user-service
    and MongoDB. Use it when no signaling server holds live guests."""
    config = _load(config_path, **{"safety.dry_run": dry_run})
    if not (yes or dry_run):
        if not sys.stdin.isatty():
            raise click.UsageError("not on a terminal: pass --yes to confirm the purge")
        click.confirm(f"Delete all guest state in {mask_url(config.redis.url)} and the databases?",
                      abort=True)
    ctx = Context.open(config)
    try:
        ping(ctx.client)
        purging.purge(ctx)
        ctx.drain()
        pending = ctx.pending()
    except (RedisUnavailable, *REDIS_DOWN) as exc:
        _exit_unreachable(exc)
    finally:
        ctx.close()
    sys.exit(1 if pending and not dry_run else 0)


@cli.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def stats(config_path, as_json):
    """Guests now (total, responsive, unresponsive), stale and orphaned ones, registered users
    online, pending and dead cascades. Reads only."""
    from . import stats as statistics

    config = _load(config_path)
    ctx = Context.open(config)
    try:
        ping(ctx.client)
        found = statistics.collect(ctx)
    except (RedisUnavailable, *REDIS_DOWN) as exc:
        _exit_unreachable(exc)
    finally:
        ctx.close()
    click.echo(json.dumps(found, sort_keys=True) if as_json else statistics.as_text(found))


@cli.command()
@config_option
def check(config_path):
    """Is Redis reachable? Are the auth-service and user-service healthy (GET /health)? Does
    MongoDB answer? Exit 3 when Redis fails, 1 when another does."""
    config = _load(config_path)
    lines, code = run_check(config)
    for line in lines:
        click.echo(str(line))
    sys.exit(code)


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
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def main() -> None:
    cli(prog_name="reaper")
