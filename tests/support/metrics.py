"""Reading reaper's metrics back as Prometheus would: ``{(sample name, sorted label items): value}``,
parsed by prometheus_client's own parser, from a Metrics registry, a text or a live /metrics."""

import httpx
from prometheus_client.parser import text_string_to_metric_families

from reaper.core.counters import Counters
from reaper.ops.metrics import Metrics


def parsed(text: str, parse=text_string_to_metric_families) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in parse(text) for s in family.samples}


def samples(metrics: Metrics) -> dict:
    """One scrape of a Metrics registry (everything /metrics would serve)."""
    return parsed(metrics.exposition().decode())


def scrape(base: str) -> dict:
    """One scrape of a live server's /metrics (classic text format)."""
    reply = httpx.get(base + "/metrics", timeout=2)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    return parsed(reply.text)


def value(scraped: dict, name: str, **labels) -> float | None:
    """The sample's value; None when the scrape has no such sample."""
    return scraped.get((name, tuple(sorted(labels.items()))))


def metrics_of(counters: Counters, leads: bool = True, paused: bool = False, circuits=tuple) -> Metrics:
    """A Metrics registry over ``counters`` (and ``circuits()``, the breakers), as the daemon builds one."""
    return Metrics(counters.snapshot, lambda: leads, lambda: paused, circuits)
