"""rediss:// (TLS) to Redis: the redis.tls_* keys, checked at start, and real TLS-only
redis-servers (this machine's redis-server 7.0 is built with TLS) with certificates made by
`openssl`: a verified server, a client certificate, a wrong CA, a certificate for another host."""

import pytest
import redis

from reaper.core.config import load_config
from reaper.store.client import connect
from support.cli import invoke
from support.config_errors import config_error
from support.guests import World
from support.keys import KEYS
from support.tls import TlsRedisProcess, encrypt_key, make_certificates

ANY_TLS_URL = "rediss://redis:6380/0"  # for configuration tests: never dialled


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("tls") / "ours")


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory):
    """Another CA, which did not sign the servers' certificates."""
    return make_certificates(tmp_path_factory.mktemp("tls") / "theirs")


@pytest.fixture(scope="module")
def misnamed_certs(tmp_path_factory):
    """Our CA signing a server certificate for a host the tests never dial."""
    return make_certificates(tmp_path_factory.mktemp("tls") / "misnamed", "DNS:redis.elsewhere.example")


def _server(certs, tmp_path_factory, **kw):
    server = TlsRedisProcess(certs, tmpdir=tmp_path_factory.mktemp("tls-redis"), **kw)
    server.start()
    return server


@pytest.fixture(scope="module")
def tls_redis(certs, tmp_path_factory):
    server = _server(certs, tmp_path_factory)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def mtls_redis(certs, tmp_path_factory):
    """Demands a client certificate signed by the CA (tls-auth-clients yes)."""
    server = _server(certs, tmp_path_factory, auth_clients=True)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def misnamed_redis(misnamed_certs, tmp_path_factory):
    server = _server(misnamed_certs, tmp_path_factory)
    try:
        yield server
    finally:
        server.close()


def world_on(server) -> tuple[World, redis.Redis]:
    client = server.client()
    client.flushall()
    return World(client), client


def tls_env(url: str, **keys) -> dict:
    """REAPER_REDIS_URL and redis.<key> settings as REAPER_REDIS_<KEY> variables."""
    return {"REAPER_REDIS_URL": url,
            **{f"REAPER_REDIS_{key.upper()}": str(value) for key, value in keys.items()}}


def run_once(launch, env: dict) -> tuple[int, str]:
    daemon = launch("run", "--once", **env)
    return daemon.proc.wait(30), daemon.stderr()


# -- configuration: checked at start, the error names the key ------------------------------------

@pytest.mark.parametrize("key", ["tls_ca_file", "tls_cert_file", "tls_key_file"])
@pytest.mark.parametrize("where", ["missing", "directory"])
def test_a_tls_file_that_cannot_be_read_is_refused_naming_the_key(tmp_path, key, where):
    path = tmp_path / "nowhere.pem" if where == "missing" else tmp_path

    error = config_error(tls_env(ANY_TLS_URL, **{key: path}))

    assert error.key == f"redis.{key}" and error.value == str(path)
    assert "readable file" in str(error)


def test_tls_files_are_read_from_the_toml_file_too(tmp_path, certs):
    path = tmp_path / "reaper.toml"
    path.write_text(f'[redis]\nurl = "rediss://redis:6380/0"\ntls_ca_file = "{certs.ca}"\n'
                    f'tls_cert_file = "{certs.client_cert}"\ntls_key_file = "{certs.client_key}"\n')

    loaded = load_config(path, {}).redis

    assert (loaded.tls_ca_file, loaded.tls_cert_file, loaded.tls_key_file) == (
        str(certs.ca), str(certs.client_cert), str(certs.client_key))
    assert loaded.tls_verify is True


@pytest.mark.parametrize("url", ["redis://redis:6379/0", "unix:///run/redis.sock"])
@pytest.mark.parametrize("key, value", [("tls_ca_file", "ca"), ("tls_cert_file", "client_cert"),
                                        ("tls_verify", False)])
def test_tls_settings_without_a_rediss_url_are_refused(certs, url, key, value):
    setting = str(getattr(certs, value)) if isinstance(value, str) else "false"

    error = config_error({"REAPER_REDIS_URL": url, f"REAPER_REDIS_{key.upper()}": setting})

    assert error.key == f"redis.{key}"
    assert "rediss://" in error.expected


def test_tls_settings_without_redis_url_are_refused_as_redis_host_is_plain(certs):
    error = config_error({"REDIS_HOST": "redis", "REAPER_REDIS_TLS_CA_FILE": str(certs.ca)})
    assert error.key == "redis.tls_ca_file" and "redis://" in error.expected


def test_a_key_without_its_certificate_is_refused(certs):
    error = config_error(tls_env(ANY_TLS_URL, tls_key_file=certs.client_key))
    assert error.key == "redis.tls_key_file" and "tls_cert_file" in error.expected


@pytest.mark.parametrize("case, key", [
    ("garbage CA", "redis.tls_ca_file"),
    ("garbage certificate", "redis.tls_cert_file"),
    ("key of another certificate", "redis.tls_cert_file"),
    ("encrypted key", "redis.tls_cert_file"),
])
def test_a_file_that_is_not_what_the_key_needs_is_refused_at_start(tmp_path, certs, other_certs, case, key):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    keys = {
        "garbage CA": {"tls_ca_file": garbage},
        "garbage certificate": {"tls_cert_file": garbage, "tls_key_file": certs.client_key},
        "key of another certificate": {"tls_cert_file": certs.client_cert, "tls_key_file": other_certs.client_key},
        # Must fail, not prompt for a passphrase on the terminal.
        "encrypted key": {"tls_cert_file": certs.client_cert,
                          "tls_key_file": encrypt_key(certs.client_key, tmp_path / "encrypted.key")},
    }[case]

    error = config_error(tls_env(ANY_TLS_URL, **keys))

    assert error.key == key
    assert "PEM" in error.expected


@pytest.mark.parametrize("raw, verify", [("false", False), ("0", False), ("no", False), ("true", True)])
def test_tls_verify_from_the_environment(raw, verify):
    loaded = load_config(None, tls_env(ANY_TLS_URL, tls_verify=raw))
    assert loaded.redis.tls_verify is verify


def test_tls_verify_refuses_what_is_not_a_boolean():
    error = config_error(tls_env(ANY_TLS_URL, tls_verify="maybe"))
    assert error.key == "redis.tls_verify"


# -- what connect() hands redis-py ----------------------------------------------------------------

def _connection_kwargs(environ: dict) -> dict:
    client = connect(load_config(None, environ))
    try:
        kwargs = dict(client.connection_pool.connection_kwargs)
        kwargs["class"] = client.connection_pool.connection_class.__name__
        return kwargs
    finally:
        client.close()


def test_a_plain_url_gets_a_plain_connection():
    kwargs = _connection_kwargs({"REAPER_REDIS_URL": "redis://redis:6379/0"})
    assert kwargs["class"] == "Connection"
    assert not any(name.startswith("ssl") for name in kwargs)


@pytest.mark.parametrize("keys, expected", [
    ({}, {"ssl_cert_reqs": "required", "ssl_check_hostname": True}),
    ({"tls_ca_file": "ca"}, {"ssl_cert_reqs": "required", "ssl_ca_certs": "ca"}),
    ({"tls_ca_file": "ca", "tls_cert_file": "client_cert", "tls_key_file": "client_key"},
     {"ssl_ca_certs": "ca", "ssl_certfile": "client_cert", "ssl_keyfile": "client_key"}),
    ({"tls_cert_file": "client_cert", "tls_key_file": "client_key", "tls_verify": False},
     {"ssl_cert_reqs": "none", "ssl_check_hostname": False, "ssl_certfile": "client_cert"}),
], ids=["system CAs", "own CA", "client certificate", "not verified"])
def test_a_rediss_url_gets_the_ssl_options_of_the_tls_keys(certs, keys, expected):
    as_path = lambda v: str(getattr(certs, v)) if isinstance(v, str) else v  # noqa: E731
    environ = tls_env(ANY_TLS_URL,
                      **{k: ("false" if v is False else as_path(v)) for k, v in keys.items()})

    kwargs = _connection_kwargs(environ)

    assert kwargs["class"] == "SSLConnection"
    assert {name: kwargs.get(name) for name in expected} == {
        name: as_path(value) if name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile") else value
        for name, value in expected.items()}
    if "tls_cert_file" not in keys:
        assert "ssl_certfile" not in kwargs and "ssl_keyfile" not in kwargs


# -- real TLS servers -----------------------------------------------------------------------------

def test_run_once_over_tls_reaps_the_dead_and_keeps_the_living(tls_redis, certs, launch, auth_service):
    world, client = world_on(tls_redis)
    live = world.guest(1, age=5)
    world.guest(2, age=400)
    world.entry("guest_3", "sock3")  # an orphan
    world.registered("user_reg", "sockR")

    code, stderr = run_once(launch, tls_env(tls_redis.url, tls_ca_file=certs.ca))

    assert code == 0, stderr
    assert world.records() == {live[1]}
    assert set(world.online()) == {"guest_1", "user_reg"}
    assert sorted(auth_service.deleted_guests()) == ["guest_2", "guest_3"]
    assert client.zcard(KEYS.due) == 0
    assert "NOT checked" not in stderr


def test_run_once_with_a_client_certificate(mtls_redis, certs, launch, auth_service):
    world, _ = world_on(mtls_redis)
    live = world.guest(1, age=5)
    world.guest(2, age=400)

    code, stderr = run_once(launch, tls_env(mtls_redis.url, tls_ca_file=certs.ca, tls_cert_file=certs.client_cert,
                                            tls_key_file=certs.client_key))

    assert code == 0, stderr
    assert world.records() == {live[1]} and auth_service.deleted_guests() == ["guest_2"]


def test_without_a_client_certificate_the_server_refuses_and_reaper_exits_3(mtls_redis, certs, launch,
                                                                           auth_service):
    world, _ = world_on(mtls_redis)
    world.guest(2, age=400)

    code, stderr = run_once(launch, tls_env(mtls_redis.url, tls_ca_file=certs.ca))

    assert code == 3, stderr
    assert "Redis unreachable" in stderr
    assert world.records() == {"sock2"} and auth_service.requests == []


def test_a_wrong_ca_fails_with_exit_3_and_says_why(tls_redis, other_certs, launch, auth_service):
    world, _ = world_on(tls_redis)
    world.guest(2, age=400)

    code, stderr = run_once(launch, tls_env(tls_redis.url, tls_ca_file=other_certs.ca))

    assert code == 3, stderr
    assert "Redis unreachable" in stderr and "certificate verify failed" in stderr
    assert "Traceback" not in stderr
    assert world.records() == {"sock2"} and auth_service.requests == []


def test_a_certificate_for_another_host_is_refused(misnamed_redis, misnamed_certs, launch, auth_service):
    world, _ = world_on(misnamed_redis)
    world.guest(2, age=400)

    code, stderr = run_once(launch, tls_env(misnamed_redis.url, tls_ca_file=misnamed_certs.ca))

    assert code == 3, stderr
    assert "certificate verify failed" in stderr and "mismatch" in stderr
    assert world.records() == {"sock2"} and auth_service.requests == []


def test_tls_verify_false_connects_anyway_and_warns_at_start(misnamed_redis, other_certs, launch, auth_service):
    world, _ = world_on(misnamed_redis)
    world.guest(2, age=400)

    code, stderr = run_once(launch, tls_env(misnamed_redis.url, tls_ca_file=other_certs.ca, tls_verify="false"))

    assert code == 0, stderr
    assert world.records() == set() and auth_service.deleted_guests() == ["guest_2"]
    warning = next(line for line in stderr.splitlines() if "tls_verify = false" in line)
    assert "WARNING" in warning and "NOT checked" in warning
    assert stderr.index(warning) < stderr.index("Sweep:")


def test_a_plain_url_to_a_tls_server_exits_3(tls_redis, launch, auth_service):
    code, stderr = run_once(launch, {"REAPER_REDIS_URL": tls_redis.url.replace("rediss://", "redis://")})

    assert code == 3, stderr
    assert "Redis unreachable" in stderr and auth_service.requests == []


@pytest.mark.usefixtures("isolated_cli")
def test_check_says_it_connected_over_tls_and_what_it_verified(mtls_redis, certs):
    env = {**tls_env(mtls_redis.url, tls_ca_file=certs.ca, tls_cert_file=certs.client_cert,
                     tls_key_file=certs.client_key),
           "REAPER_AUTH_SERVICE_BASE_URL": "", "REAPER_USER_SERVICE_BASE_URL": ""}

    result = invoke(["check"], env)

    assert result.exit_code == 0, result.output
    redis_line = next(line for line in result.stdout.splitlines() if line.startswith("redis:"))
    assert "OK" in redis_line and mtls_redis.url in redis_line
    assert f"TLS, server certificate verified against {certs.ca}" in redis_line
    assert f"client certificate {certs.client_cert}" in redis_line


@pytest.mark.usefixtures("isolated_cli")
def test_check_with_a_wrong_ca_fails_saying_tls_and_why(tls_redis, other_certs):
    env = {**tls_env(tls_redis.url, tls_ca_file=other_certs.ca),
           "REAPER_AUTH_SERVICE_BASE_URL": "", "REAPER_USER_SERVICE_BASE_URL": ""}

    result = invoke(["check"], env)

    assert result.exit_code == 3
    redis_line = next(line for line in result.stdout.splitlines() if line.startswith("redis:"))
    assert "FAIL" in redis_line and "TLS" in redis_line and "certificate verify failed" in redis_line
