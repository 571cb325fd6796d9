"""`reaper check` names the URL it asked (issue #12, item 12): base_url, then /health, with the
slash between them, whatever base_url looks like (no path, a path, a trailing slash, userinfo)."""

import pytest

from reaper.app import check
from support.cli import invoke

pytestmark = pytest.mark.usefixtures("isolated_cli")


def check_line(stdout: str, name: str) -> list[str]:
    [line] = [line for line in stdout.splitlines() if line.startswith(name + ":")]
    return line.split()


def test_check_prints_each_health_url_with_its_slash(cli_env, auth_service, user_service):
    result = invoke(["check"], cli_env)

    assert check_line(result.stdout, "auth-service")[1:] == ["OK", f"{auth_service.url}/health"]
    assert check_line(result.stdout, "user-service")[1:] == ["OK", f"{user_service.url}/health"]


def test_a_base_url_with_a_trailing_slash(cli_env, auth_service):
    env = {**cli_env, "REAPER_AUTH_SERVICE_BASE_URL": auth_service.url + "/"}

    result = invoke(["check"], env)

    assert check_line(result.stdout, "auth-service")[1:] == ["OK", f"{auth_service.url}/health"]
    assert [r.path for r in auth_service.calls("GET")] == ["/health"]  # what it shows is what it asked


@pytest.mark.parametrize("base, shown", [
    ("http://h:49085", "http://h:49085/health"),
    ("http://h:49085/", "http://h:49085/health"),
    ("https://h/api", "https://h/api/health"),
    ("https://h/api/", "https://h/api/health"),
    ("http://svc:pw@h:1", "http://svc:***@h:1/health"),
])
def test_health_url(base, shown):
    assert check.health_url(base) == shown
