"""Secrets are never shown (issue #12, item 9): the password in any URL (base_url too) is masked
by `reaper config`, `reaper check`, logs and errors; a configuration error never echoes a
secret's value, even under a misspelled key or when it is no string; a reply that echoes the
credentials reaper sent is kept, logged and shown cut short and scrubbed of them."""

import base64
import io
import json

import pytest
from loguru import logger

from reaper import logs

from reaper.core import redact
from reaper.core.config import as_masked_dict, load_config, mask_url, secrets_of
from reaper.app.context import Context
from reaper.core.errors import ConfigError, PermanentError
from reaper.store.events import FIELD
from reaper.cascade.services import AuthService
from support.cli import invoke
from support.echo import EchoService, bodies
from support.gates import cleared, permit
from support.keys import keys_of
from support.logs import restore_logging  # noqa: F401 - autouse: loguru back as it was

TOKEN = "tok-Zq8v3PLuS-91f2"
USER, PASSWORD = "svc", "PaSSw0rd-7d1e"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
LEAKS = (TOKEN, PASSWORD, BASIC, f"{USER}:{PASSWORD}")
CREDENTIALS = {  # how the auth-service is configured: a token, userinfo in base_url, or both
    "bearer token": ({"REAPER_AUTH_SERVICE_TOKEN": TOKEN}, ""),
    "userinfo": ({}, f"{USER}:{PASSWORD}"),
    "both": ({"REAPER_AUTH_SERVICE_TOKEN": TOKEN}, f"{USER}:{PASSWORD}"),
}
MODES = list(bodies("Bearer x"))


def assert_no_leak(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text


# -- reply bodies ----------------------------------------------------------------------------------

@pytest.mark.parametrize("credentials", CREDENTIALS, ids=CREDENTIALS.keys())
@pytest.mark.parametrize("mode", MODES)
def test_a_refusal_that_echoes_the_credentials_is_kept_scrubbed_and_short(credentials, mode):
    environ, userinfo = CREDENTIALS[credentials]
    with EchoService(401, mode) as echo:
        config = load_config(None, {**environ, "REAPER_AUTH_SERVICE_BASE_URL": echo.url(userinfo)})
        service = AuthService(config.auth_service)
        with pytest.raises(PermanentError) as refused:
            service.delete_guest(cleared("guest_1"))
        service.close()

    message = str(refused.value)
    assert echo.seen and echo.seen[0]  # it did send credentials, and the body echoed them
    assert_no_leak(message)
    assert message.startswith("auth-service: DELETE /auth/guest/guest_1: HTTP 401 ")
    assert len(message) < 300  # cut short: about 200 characters of the body


@pytest.mark.parametrize("mode", MODES)
def test_an_unexpected_cleanup_reply_is_logged_scrubbed(mode, logs):
    with EchoService(200, mode) as echo:
        config = load_config(None, {"REAPER_AUTH_SERVICE_TOKEN": TOKEN,
                                    "REAPER_AUTH_SERVICE_BASE_URL": echo.url(f"{USER}:{PASSWORD}")})
        service = AuthService(config.auth_service)
        assert service.cleanup_all(permit("auth_all")) is None
        service.close()

    [warning] = logs.at("WARNING", "unexpected reply body")
    assert_no_leak(warning)


@pytest.mark.parametrize("mode", ["json", "headers", "bare", "decoded"])
def test_dead_letters_events_and_logs_never_hold_the_credentials(mode, r, world, make_config, mongo,
                                                                   cli_env):
    sink = io.StringIO()
    with EchoService(401, mode) as echo:
        environ = {"REAPER_AUTH_SERVICE_TOKEN": TOKEN, "REAPER_AUTH_SERVICE_BASE_URL": echo.url(f"{USER}:{PASSWORD}")}
        config = make_config(environ)
        logs.configure("DEBUG", "text", secrets_of(config), sink=sink)
        world.guest(1, age=400)
        ctx = Context.open(config)
        try:
            ctx.sweep()
            assert ctx.drain().dead == 1
        finally:
            ctx.close()

    stored = b"".join(r.lrange(keys_of(r).dead, 0, -1)).decode()
    written = "".join(v.decode() for _, fields in r.xrange(keys_of(r).events) for v in fields.values())
    assert "HTTP 401" in stored and "HTTP 401" in written
    for text in (stored, written, sink.getvalue()):
        assert_no_leak(text)
    env = {**cli_env, **environ}
    for args in (["dead-letters", "list"], ["dead-letters", "list", "--json"], ["events"], ["events", "--json"]):
        result = invoke(args, env)
        assert result.exit_code == 0 and "guest_1" in result.stdout
        assert_no_leak(result.output)


def test_credentials_kept_by_an_older_version_are_not_shown(r, cli_env):
    echoed = bodies(f"Bearer {TOKEN}")["json"] + " " + bodies(f"Basic {BASIC}")["headers"]
    error = f"auth-service: DELETE /auth/guest/guest_1: HTTP 401 {echoed!r}"
    r.lpush(keys_of(r).dead, json.dumps({
        "id": "guest:guest_1", "reason": "orphan", "user_id": "guest_1", "socket_id": "s1", "created": 1.0,
        "dead_at": 2.0, "attempts": 1, "steps": ["auth"], "errors": {"auth": error}, "last_error": error}))
    r.xadd(keys_of(r).events, {FIELD: json.dumps({"event": "dead_letter", "user_id": "guest_1",
                                                  "reason": "orphan", "at": 2.0, "note": error})})

    for args in (["dead-letters", "list"], ["dead-letters", "list", "--json"], ["events"], ["events", "--json"]):
        result = invoke(args, cli_env)
        assert result.exit_code == 0 and "HTTP 401" in result.stdout
        assert TOKEN not in result.output and BASIC not in result.output


@pytest.mark.parametrize("text, leak", [
    ('{"password": "hunter2 with spaces"}', "hunter2"),
    ("Authorization: Bearer hunter2hunter2", "hunter2"),
    ("proxy-authorization: Basic aHVudGVyMjpodW50ZXIy", "aHVudGVy"),
    ("GET /x?token=hunter2&client_secret=hunter3", "hunter"),
    ("X-Api-Key: hunter2", "hunter2"),
    ("api_key=hunter2; session=1", "hunter2"),
    ("see mongodb://app:hunter2@db:27017/voip", "hunter2"),
    ("redis://:hunter2@cache:6379/0 down", "hunter2"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJodW50ZXIyIn0.c2lnbmF0dXJlaHVudGVy", "eyJzdWIi"),
    ('"{\\"secret\\":\\"hunter2\\"}"', "hunter2"),
    ("{'access_token': 'hunter2'}", "hunter2"),
    ('{"credentials": {"password": 123456789}}', "123456789"),
    ("cookie: sid=hunter2", "hunter2"),
])
def test_scrub_masks_what_looks_like_a_credential(text, leak):
    scrubbed = redact.scrub(text)
    assert leak not in scrubbed and redact.MASK in scrubbed


@pytest.mark.parametrize("text", [
    "auth-service: DELETE /auth/guest/guest_2: HTTP 400 'bad request'",
    "Sweep: scanned=10 stale=2 reaped=2 skipped_live=0 malformed=0 duration=0.01s",
    "Basic authentication required", 'WWW-Authenticate: Bearer realm="api"',
    "redis://user@cache:6379/0", "guest_session:abc keys: 3",
])
def test_scrub_leaves_ordinary_text_alone(text):
    assert redact.scrub(text) == text


# -- what `reaper config` and `reaper check` print ----------------------------------------------------

URL_SECRETS = {
    "REAPER_REDIS_URL": ("redis://reaper:Redis-pw-1@cache:6379/0?password=Redis-pw-2", ("Redis-pw-1", "Redis-pw-2")),
    "REAPER_AUTH_SERVICE_BASE_URL": ("http://svc:Auth-pw-3@auth:3001", ("Auth-pw-3",)),
    "REAPER_USER_SERVICE_BASE_URL": ("https://u:User-pw-4@users/api?token=User-tok-5", ("User-pw-4", "User-tok-5")),
    "REAPER_MONGO_URI": ("mongodb://app:Mongo-pw-6@mongo:27017/voip?authSource=admin", ("Mongo-pw-6",)),
    "REAPER_REDIS_SENTINEL_PASSWORD": ("Sentinel-pw-7", ("Sentinel-pw-7",)),
    "REAPER_AUTH_SERVICE_TOKEN": ("Auth-tok-8", ("Auth-tok-8",)),
}


def test_reaper_config_masks_the_password_of_every_url(isolated_cli):
    environ = {name: value for name, (value, _) in URL_SECRETS.items()}

    result = invoke(["config"], environ)

    assert result.exit_code == 0, result.output
    for _, leaks in URL_SECRETS.values():
        for leak in leaks:
            assert leak not in result.output
    assert 'base_url = "http://svc:***@auth:3001"' in result.stdout
    assert 'base_url = "https://u:***@users/api?token=***"' in result.stdout
    assert as_masked_dict(load_config(None, environ))["auth_service"]["base_url"] == "http://svc:***@auth:3001"


def test_secrets_of_knows_every_url_password_and_the_basic_credential_made_of_it():
    config = load_config(None, {name: value for name, (value, _) in URL_SECRETS.items()})

    found = set(secrets_of(config))

    assert {leak for _, leaks in URL_SECRETS.values() for leak in leaks} <= found
    assert base64.b64encode(b"svc:Auth-pw-3").decode() in found


def test_a_log_line_quoting_a_base_url_or_its_basic_header_is_masked():
    config = load_config(None, {"REAPER_AUTH_SERVICE_BASE_URL": f"http://{USER}:{PASSWORD}@auth:3001"})
    sink = io.StringIO()
    logs.configure("INFO", "text", secrets_of(config), sink=sink)

    logger.warning("auth-service at {} said: {}", config.auth_service.base_url, f"you sent {BASIC}")
    logger.warning("mongo: mongodb://other:{}@elsewhere/db unreachable", "not-configured-pw")

    assert_no_leak(sink.getvalue())
    assert "not-configured-pw" not in sink.getvalue()
    assert "http://svc:***@auth:3001" in sink.getvalue()


def test_reaper_check_masks_the_base_url_password(cli_env, auth_service):
    env = {**cli_env, "REAPER_AUTH_SERVICE_BASE_URL": auth_service.url.replace("://", f"://{USER}:{PASSWORD}@")}

    result = invoke(["check"], env)

    assert_no_leak(result.output)
    [line] = [l for l in result.stdout.splitlines() if l.startswith("auth-service:")]
    assert line.split()[1] == "OK" and line.endswith(f"http://{USER}:***@{auth_service.url[7:]}/health")


@pytest.mark.parametrize("mode", MODES)
def test_reaper_check_masks_credentials_a_failing_health_echoes(cli_env, mode):
    with EchoService(401, mode) as echo:
        env = {**cli_env, "REAPER_AUTH_SERVICE_TOKEN": TOKEN, "REAPER_AUTH_SERVICE_BASE_URL": echo.url(f"{USER}:{PASSWORD}")}
        result = invoke(["check"], env)

    assert result.exit_code == 1
    assert_no_leak(result.output)
    [line] = [l for l in result.stdout.splitlines() if l.startswith("auth-service:")]
    assert "FAIL" in line and "HTTP 401" in line


# -- configuration errors --------------------------------------------------------------------------

HUNTER = "hunter2-Q7x"
BAD_FILES = {
    "misspelled token": ("[auth_service]\ntokn = '{s}'\n", "auth_service.tokn"),
    "misspelled token 2": ("[user_service]\ntoekn = '{s}'\n", "user_service.toekn"),
    "misspelled password": ("[redis]\nsentinel_pasword = '{s}'\n", "redis.sentinel_pasword"),
    "password": ("[redis]\npassword = '{s}'\n", "redis.password"),
    "passwd": ("[mongo]\npasswd = '{s}'\n", "mongo.passwd"),
    "secret": ("[auth_service]\nclient_secret = '{s}'\n", "auth_service.client_secret"),
    "api key": ("[auth_service]\napi_key = '{s}'\n", "auth_service.api_key"),
    "credentials": ("[mongo]\ncredentials = '{s}'\n", "mongo.credentials"),
    "numeric token": ("[auth_service]\ntoken = 73519{n}\n", "auth_service.token"),
    "list token": ("[auth_service]\ntoken = ['{s}']\n", "auth_service.token"),
    "table token": ("[user_service]\ntoken = {{ value = '{s}' }}\n", "user_service.token"),
    "bool-ish sentinel password": ("[redis]\nsentinel_password = [1, '{s}']\n", "redis.sentinel_password"),
    "numeric sentinel password": ("[redis]\nsentinel_password = 73519{n}\n", "redis.sentinel_password"),
    "base_url bad port": ("[auth_service]\nbase_url = 'http://svc:{s}@auth:port'\n", "auth_service.base_url"),
    "base_url not a string": ("[auth_service]\nbase_url = ['http://svc:{s}@auth']\n", "auth_service.base_url"),
    "mongo uri bad": ("[mongo]\nuri = 'mongodb://app:{s}@mongo:x/voip'\n", "mongo.uri"),
    "redis url bad": ("[redis]\nurl = 'redis://:{s}@cache:port/0'\n", "redis.url"),
    "redis url list": ("[redis]\nurl = ['redis://:{s}@cache/0']\n", "redis.url"),
    "sentinels with a url": ("[redis]\nsentinels = ['redis://:{s}@s1:26379']\n", "redis.sentinels"),
    "unknown section": ("[auth_servce]\ntoken = '{s}'\n", "auth_servce"),
    "unknown section 2": ("[vault]\ntkn = '{s}'\nurl = 'http://a:{s}@v'\n", "vault"),
    "section not a table": ("auth_service = 'http://svc:{s}@auth'\n", "auth_service"),
}


@pytest.mark.parametrize("text, key", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_config_error_never_echoes_a_secret(tmp_path, isolated_cli, text, key):
    path = tmp_path / "reaper.toml"
    path.write_text(text.format(s=HUNTER, n="86421"))

    result = invoke(["config", "--config", str(path)], {})

    assert result.exit_code == 2
    assert key in result.stderr
    assert HUNTER not in result.output and "7351986421" not in result.output


@pytest.mark.parametrize("name, value, key", [
    ("REAPER_AUTH_SERVICE_TOKN", HUNTER, "REAPER_AUTH_SERVICE_TOKN"),
    ("REAPER_USER_SERVICE_TOKNE", HUNTER, "REAPER_USER_SERVICE_TOKNE"),
    ("REAPER_REDIS_SENTINEL_PASWORD", HUNTER, "REAPER_REDIS_SENTINEL_PASWORD"),
    ("REAPER_REDIS_PASSWD", HUNTER, "REAPER_REDIS_PASSWD"), ("REAPER_MONGO_PW", HUNTER, "REAPER_MONGO_PW"),
    ("REAPER_AUTH_SERVICE_APIKEY", HUNTER, "REAPER_AUTH_SERVICE_APIKEY"), ("REAPER_SECRET", HUNTER, "REAPER_SECRET"),
    ("REAPER_AUTH_SERVICE_BASE_URLL", f"http://svc:{HUNTER}@auth", "REAPER_AUTH_SERVICE_BASE_URLL"),
    ("REAPER_AUTH_SERVICE_BASE_URL", f"http://svc:{HUNTER}@auth:port", "auth_service.base_url"),
    ("REAPER_MONGO_URI", f"mongodb://app:{HUNTER}@mongo:x", "mongo.uri"),
    ("REAPER_REDIS_SENTINELS", f"redis://:{HUNTER}@s1:26379", "redis.sentinels"),
    ("REAPER_AUTH_SERVICE_TOKEN", f"{HUNTER}", None),  # a fine token: no error at all
])
def test_an_environment_error_never_echoes_a_secret(isolated_cli, name, value, key):
    result = invoke(["config"], {name: value})

    assert result.exit_code == (0 if key is None else 2)
    assert key is None or key in result.stderr
    assert HUNTER not in result.output


def test_a_config_error_still_shows_an_ordinary_value():
    with pytest.raises(ConfigError) as error:
        load_config(None, {"REAPER_TIMING_CONNECTION_TIMEOUT": "3 minutes"})
    assert "'3 minutes'" in str(error.value)


@pytest.mark.parametrize("url, masked", [
    ("http://svc:pw@host:1/x", "http://svc:***@host:1/x"),
    ("https://h/api?token=t1&x=1&api_key=k2", "https://h/api?token=***&x=1&api_key=***"),
    ("mongodb://app:p%40ss@m1,m2/db?authSource=admin", "mongodb://app:***@m1,m2/db?authSource=admin"),
    ("http://svc:p@ss@host", "http://svc:***@host"),
])
def test_mask_url_masks_every_credential_in_a_url(url, masked):
    assert mask_url(url) == masked


def test_service_config_tokens_never_reach_the_masked_configuration():
    masked = as_masked_dict(load_config(None, {"REAPER_AUTH_SERVICE_TOKEN": TOKEN,
                                               "REAPER_USER_SERVICE_BASE_URL": f"http://u:{PASSWORD}@users"}))
    assert_no_leak(json.dumps(masked))
    assert masked["auth_service"]["token"] == "***"
