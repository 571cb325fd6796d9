"""`reaper health`: one GET of /healthz, one line, exit 0 on 200 and 1 otherwise (the image's
HEALTHCHECK). The server here is a loopback stand-in; test_container.py runs it against a real
`reaper run`."""


import pytest

from reaper.app.probe import url_for_listen, with_health_path
from support.cli import invoke

pytestmark = pytest.mark.usefixtures("isolated_cli")


def one_line(result) -> str:
    lines = result.output.splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_a_200_is_healthy_exit_0_with_the_body_on_one_line(auth_service):
    result = invoke(["health", "--url", f"{auth_service.url}/health"], {})

    assert result.exit_code == 0
    assert one_line(result) == f'healthy: {auth_service.url}/health: 200 {{"status": "ok"}}'


def test_a_503_is_unhealthy_exit_1_and_says_why(auth_service):
    auth_service.fail(503)

    result = invoke(["health", "--url", f"{auth_service.url}/health"], {})

    assert result.exit_code == 1
    line = one_line(result)
    assert line.startswith(f"unhealthy: {auth_service.url}/health: 503 ")
    assert "injected failure" in line


def test_any_status_but_200_is_unhealthy(auth_service):
    auth_service.fail(204)

    result = invoke(["health", "--url", f"{auth_service.url}/health"], {})

    assert result.exit_code == 1 and one_line(result).startswith("unhealthy: ")


def test_a_bare_url_asks_its_healthz(auth_service):
    result = invoke(["health", "--url", auth_service.url], {})

    assert [r.path for r in auth_service.calls("GET")] == ["/healthz"]
    assert result.exit_code == 1 and "404" in one_line(result)  # the stand-in serves no /healthz


def test_without_url_it_asks_server_listen_through_loopback(auth_service):
    port = auth_service.url.rsplit(":", 1)[1]

    result = invoke(["health"], {"REAPER_SERVER_LISTEN": f"0.0.0.0:{port}"})

    assert [r.path for r in auth_service.calls("GET")] == ["/healthz"]
    assert one_line(result).startswith(f"unhealthy: http://127.0.0.1:{port}/healthz: 404")


def test_nothing_listening_is_unhealthy_not_a_crash(auth_service):
    url = auth_service.url
    auth_service.stop()

    result = invoke(["health", "--url", url], {})

    assert result.exit_code == 1
    assert one_line(result).startswith(f"unhealthy: {url}/healthz: ConnectError")


def test_a_server_that_hangs_is_unhealthy_after_the_timeout(auth_service):
    auth_service.hang_seconds = 30  # then it would answer 200: the command gave up before that
    auth_service.fail("hang")

    result = invoke(["health", "--url", f"{auth_service.url}/health", "--timeout", "300ms"], {})

    assert result.exit_code == 1 and "ReadTimeout" in one_line(result)
    [request] = auth_service.requests
    assert request.status is None  # still unanswered when the command had given up


def test_no_listen_and_no_url_is_a_usage_error_naming_the_setting():
    result = invoke(["health"], {})

    assert result.exit_code == 2
    assert "server.listen is empty" in result.output and "--url" in result.output


@pytest.mark.parametrize("args, expected", [
    (["--url", "ftp://example.com/healthz"], "expected an http:// URL"),
    (["--url", "127.0.0.1:9108"], "expected an http:// URL"),
    (["--url", "http://x", "--timeout", "soon"], "'soon'"),
    (["--url", "http://x", "--timeout", "0s"], "'0s'"),
])
def test_bad_arguments_exit_2_with_a_clear_message(args, expected):
    result = invoke(["health", *args], {})

    assert result.exit_code == 2 and expected in result.output


def test_a_bad_configuration_exits_2_naming_the_key():
    result = invoke(["health"], {"REAPER_SERVER_LISTEN": "nowhere"})

    assert result.exit_code == 2 and "server.listen" in result.stderr


@pytest.mark.parametrize("listen, url", [
    ("127.0.0.1:9108", "http://127.0.0.1:9108/healthz"),
    ("0.0.0.0:9108", "http://127.0.0.1:9108/healthz"),
    ("[::]:9108", "http://[::1]:9108/healthz"),
    ("[::1]:9", "http://[::1]:9/healthz"),
    ("reaper.local:80", "http://reaper.local:80/healthz"),
])
def test_the_url_for_a_listen_address(listen, url):
    assert url_for_listen(listen) == url


@pytest.mark.parametrize("given, asked", [
    ("http://h:1", "http://h:1/healthz"),
    ("http://h:1/", "http://h:1/healthz"),
    ("http://h:1/readyz", "http://h:1/readyz"),
    ("https://h/healthz?verbose=1", "https://h/healthz?verbose=1"),
])
def test_a_given_url_keeps_its_path_or_gets_healthz(given, asked):
    assert with_health_path(given) == asked
