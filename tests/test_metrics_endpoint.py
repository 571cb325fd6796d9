"""/metrics as Prometheus asks for it (reaper/ops/metrics.py through reaper/ops/server.py), on a real socket:
OpenMetrics and gzip when the request says so, name[] filters, reaper_build_info, the process
collector, and reaper_circuit_open following a real breaker."""

import gzip
import platform
from importlib.metadata import version

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

from reaper.cascade.breaker import CircuitOpen
from reaper.core.errors import TransientError
from reaper.ops.monitor import Monitor
from reaper.ops.sdnotify import Notifier
from support.metrics import parsed
from support.redis_proc import find_free_port
from support.standin import wait_for

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@pytest.fixture
def served(ctx_factory):
    """(base URL, context) of a Monitor serving a real context's metrics on a free port."""
    ctx = ctx_factory(cascade__breaker_failures=2, cascade__breaker_cooldown="50ms")
    monitor = Monitor(ctx.config, Notifier({})).attach(ctx, None)
    monitor.listen(f"127.0.0.1:{find_free_port()}")
    yield f"http://127.0.0.1:{monitor.endpoint.port}/metrics", ctx
    monitor.close()


CLIENT = httpx.Client(timeout=5)  # one: each new client loads the CA bundle again


def get(url: str, **headers: str) -> httpx.Response:
    return CLIENT.get(url, headers=headers)


def names(text: str) -> set[str]:
    return {name for name, _ in parsed(text)}


def test_the_classic_text_format_unless_openmetrics_is_asked_for(served):
    url, _ = served
    plain = get(url, accept="text/html, */*")  # what a browser sends: nothing this client speaks

    assert plain.status_code == 200
    assert plain.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert not plain.text.endswith("# EOF\n")

    open_metrics = get(url, accept="application/openmetrics-text;version=1.0.0;q=0.9,text/plain;q=0.5")

    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert open_metrics.text.endswith("# EOF\n")
    scraped = parsed(open_metrics.text, openmetrics_families)  # the strict parser takes it
    assert scraped[("reaper_leader", ())] == 0


def test_gzip_when_the_client_accepts_it_and_only_then(served):
    url, _ = served
    with CLIENT.stream("GET", url, headers={"accept-encoding": "gzip"}) as reply:
        raw = b"".join(reply.iter_raw())
    assert reply.headers["content-encoding"] == "gzip"
    assert int(reply.headers["content-length"]) == len(raw)
    assert "reaper_build_info" in names(gzip.decompress(raw).decode())

    identity = get(url, **{"accept-encoding": "identity"})
    assert "content-encoding" not in identity.headers
    assert "reaper_build_info" in names(identity.text)


def test_name_filters_keep_only_the_samples_asked_for(served):
    url, _ = served
    reply = get(url + "?name[]=reaper_cascades_pending&name[]=process_open_fds&name[]=reaper_reaped_total")

    assert names(reply.text) == {"reaper_cascades_pending", "process_open_fds", "reaper_reaped_total"}
    assert get(url + "?name[]=no_such_metric").text == ""  # nothing matches: an empty scrape
    assert get(url + "?name[]=no_such_metric", accept=OPENMETRICS).text == "# EOF\n"


def test_build_info_and_the_process_and_platform_collectors(served):
    url, _ = served
    scraped = parsed(get(url).text)

    build = {labels: v for (name, labels), v in scraped.items() if name == "reaper_build_info"}
    assert build == {(("python", platform.python_version()), ("version", version("reaper"))): 1}
    assert scraped[("process_resident_memory_bytes", ())] > 0
    assert scraped[("process_open_fds", ())] > 0
    assert scraped[("process_start_time_seconds", ())] > 0
    assert any(name == "python_info" for name, _ in scraped)
    assert any(name == "python_gc_collections_total" for name, _ in scraped)


def test_a_head_answers_the_headers_of_a_get(served):
    url, _ = served
    reply = CLIENT.head(url, headers={"accept": OPENMETRICS})

    assert reply.status_code == 200 and reply.content == b""
    assert reply.headers["content-type"].startswith("application/openmetrics-text")


def open_circuits(url: str) -> dict[str, float]:
    return {dict(labels)["target"]: v for (name, labels), v in parsed(get(url).text).items()
            if name == "reaper_circuit_open"}


def test_the_circuit_gauge_is_1_while_a_breaker_is_open_and_0_once_a_probe_succeeds(served):
    url, ctx = served
    closed = {"auth_service": 0, "mongo": 0, "signaling": 0, "user_service": 0}
    assert open_circuits(url) == closed

    def outage():
        raise TransientError("HTTP 503")

    for _ in range(2):  # cascade.breaker_failures in a row
        with pytest.raises(TransientError):
            ctx.runner.circuits.auth.call(outage)

    assert open_circuits(url) == {**closed, "auth_service": 1}

    def probe() -> bool:  # refused (CircuitOpen) until the 50 ms cooldown is over
        try:
            return ctx.runner.circuits.auth.call(lambda: "ok") == "ok"
        except CircuitOpen:
            return False

    assert wait_for(probe, timeout=5)
    assert open_circuits(url) == closed
