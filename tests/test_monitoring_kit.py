"""The monitoring kit (deploy/prometheus, deploy/grafana; docs/monitoring.md): promtool checks
the alert rules and runs their unit tests, every expression of the rules and the dashboard reads
only metrics a live reaper (or a cron run's textfile) exports, and a real Prometheus scrapes a
real reaper with the rules loaded: every rule healthy, none pending, every panel with data.
promtool and prometheus come from Debian's `prometheus` package: without them these tests fail,
they do not skip."""

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.daemons import Launcher
from support.prometheus_proc import PrometheusProcess, TextfileServer, binary
from support.promql import grafana_names, metric_names
from support.redis_proc import find_free_port
from support.standin import StandIn, wait_for
from support.manifests import load

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "reaper-alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "reaper-alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "reaper-dashboard.json"
DOC = ROOT / "docs" / "monitoring.md"
JOB = "reaper"
# Series Prometheus makes itself: a scrape's own, and the alerts' state.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added",
                     "scrape_samples_post_metric_relabeling", "ALERTS", "ALERTS_FOR_STATE"}
SEVERITIES = {"critical", "warning", "info"}
DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def alerts() -> list[dict]:
    return [rule for group in load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict) -> list[dict]:
    """Every panel, those inside collapsed rows too, rows left out."""
    found = []
    for panel in board["panels"]:
        found += [panel] if panel["type"] != "row" else panel.get("panels", [])
    return found


def dashboard_queries(board: dict) -> list[str]:
    """The panels' expressions and the query variables' queries."""
    exprs = [target["expr"] for panel in panels(board) for target in panel["targets"]]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def seconds(duration: str) -> int:
    match = DURATION.match(duration)
    assert match and duration, f"not a duration this test reads: {duration!r}"
    hours, minutes, secs = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + secs


def promtool(*args: str, cwd: Path = RULES.parent) -> subprocess.CompletedProcess:
    return subprocess.run([binary("promtool"), *args], capture_output=True, text=True, timeout=60, cwd=cwd)


# -- against a live reaper (first: see the stack fixture) -----------------------------------------

def sample_names(text: str) -> set[str]:
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


class LiveReaper:
    def __init__(self, address: str):
        self.address = address
        self.url = f"http://{address}/metrics"

    def sample_names(self) -> set[str]:
        return sample_names(httpx.get(self.url, timeout=5).text)

    def swept(self) -> bool:
        try:
            return {"reaper_guests", "reaper_leader"} <= self.sample_names()
        except httpx.TransportError:
            return False  # not listening yet


@dataclass
class Stack:
    reaper: LiveReaper
    cron: TextfileServer
    prometheus: PrometheusProcess


@pytest.fixture(scope="module")
def stack(redis_server, tmp_path_factory):
    """One `reaper run` (the leader, having swept) serving /metrics on a free loopback port; the
    textfile a `reaper run --once --metrics-file` beside it left, served as node-exporter would;
    a real Prometheus scraping both every second (as job "reaper", like a Pushgateway scraped
    with honor_labels) with the rules loaded. Prometheus' service discovery hands it the targets
    only after 5 s: it starts first, with the first test that asks for it, and the tests that
    follow in this file run meanwhile (those that need its data are last)."""
    if not redis_server.is_running:
        redis_server.restart()  # an earlier test stopped it
    client = redis_server.client()
    client.flushall()
    client.close()
    workdir, address = tmp_path_factory.mktemp("monitoring"), f"127.0.0.1:{find_free_port()}"
    textfile = workdir / "reaper.prom"
    with StandIn() as auth, StandIn() as users, TextfileServer(textfile) as cron:
        launcher = Launcher({"REAPER_REDIS_URL": redis_server.url}, auth.url, users.url, workdir)
        prometheus = PrometheusProcess(workdir, JOB, [address, cron.address], [RULES])
        try:
            prometheus.start()
            daemon = launcher.start("run", REAPER_SERVER_LISTEN=address)
            reaper = LiveReaper(address)
            assert wait_for(reaper.swept, timeout=30, interval=0.1), daemon.stderr()[-4000:]
            run = launcher.start("run", "--once", "--pending-ok", "--metrics-file", str(textfile))
            assert run.proc.wait(60) == 0 and textfile.exists(), run.stderr()[-4000:]
            yield Stack(reaper, cron, prometheus)
            daemon.stop()
        finally:
            prometheus.stop()
            launcher.kill_all()


def test_every_expression_reads_only_metrics_a_live_reaper_or_a_cron_run_exports(stack):
    exported = stack.reaper.sample_names() | sample_names(stack.cron.path.read_text()) | PROMETHEUS_SERIES
    exprs = [rule["expr"] for rule in alerts()] + dashboard_queries(dashboard())
    unknown = {expr: sorted(grafana_names(expr) - exported) for expr in exprs}
    assert not {expr: names for expr, names in unknown.items() if names}
    assert all(grafana_names(expr) for expr in exprs)


def family(sample_name: str) -> str:
    return re.sub(r"_(total|created|bucket|count|sum)$", "", sample_name)


def test_the_dashboard_shows_every_reaper_metric(stack):
    shown = {family(name) for expr in dashboard_queries(dashboard()) for name in grafana_names(expr)}
    exported = {family(name) for name in stack.reaper.sample_names() if name.startswith("reaper_")}
    assert not exported - shown, f"metrics no panel shows: {sorted(exported - shown)}"


# -- the rules: promtool --------------------------------------------------------------------------

def test_promtool_finds_every_rule_valid():
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_a_missing_promtool_fails_the_tests_saying_how_to_install_it(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(AssertionError, match="promtool is not on PATH: apt-get install .* prometheus"):
        binary("promtool")


def test_the_rules_pass_their_promtool_unit_tests():
    result = promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# Each change breaks an alert; the unit test named beside it must catch it (and no other fails).
MUTATIONS = [('up{job="reaper"} == 0', "up == 0", "ReaperDown fires"),
             ('absent(up{job="reaper"} == 1)', 'absent(up{job="reaper"})', "ReaperAbsent fires"),
             (" unless on (job) max by (job) (reaper_paused) == 1", "", "ReaperNoSweep stays quiet"),
             ("reaper_last_run_timestamp_seconds) > 1", "reaper_last_run_timestamp_seconds) > 0",
              "ReaperTwoLeaders fires"),
             ("(reaper_leader unless on (job, instance) reaper_last_run_timestamp_seconds) == 0",
              "(reaper_leader) == 0", "ReaperNoLeader and ReaperTwoLeaders leave out cron runs"),
             ("(reaper_writer_clock_skew_max_seconds) > 2", "(reaper_writer_clock_skew_max_seconds) > 0.1",
              "ReaperWriterClockSkew fires")]


def test_the_unit_tests_catch_rules_gone_wrong(tmp_path):
    text = RULES.read_text()
    for find, replace, _ in MUTATIONS:
        assert text.count(find) == 1, find
        text = text.replace(find, replace)
    (tmp_path / RULES.name).write_text(text)
    shutil.copy(RULE_TESTS, tmp_path)
    result = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    failed = set(re.findall(r"name: (.+?),\n", result.stdout + result.stderr))
    assert {name for name in failed for *_, test in MUTATIONS if name.startswith(test)} == failed
    assert all(any(name.startswith(test) for name in failed) for *_, test in MUTATIONS), failed


# -- the rules: shape -----------------------------------------------------------------------------

def doc_anchors() -> set[str]:
    """GitHub's anchors of docs/monitoring.md's headings."""
    headings = re.findall(r"^#+ (.+)$", DOC.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_every_alert_waits_has_a_severity_and_says_what_to_do():
    anchors = doc_anchors()
    for rule in alerts():
        name = rule["alert"]
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, name
        seconds(rule["for"])
        assert rule["labels"]["severity"] in SEVERITIES, name
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], name
        assert notes["runbook"] == f"docs/monitoring.md#{name.lower()}", name
        assert name.lower() in anchors, f"docs/monitoring.md has no section {name}"
        assert f"`{name}`" in DOC.read_text(), f"docs/monitoring.md's table lacks {name}"


def test_the_issue_s_alerts_are_there():
    names = {rule["alert"] for rule in alerts()}
    assert {"ReaperDown", "ReaperAbsent", "ReaperNoSweep", "ReaperDeadLettersGrowing", "ReaperCircuitOpen",
            "ReaperMassExpiryHold", "ReaperNoLeader", "ReaperTwoLeaders", "ReaperWriterClockSkew",
            "ReaperClockHold", "ReaperRedisUnreachable"} <= names


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not():
    evaluations = [case for test in load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    for rule in alerts():
        outcomes = [bool(case["exp_alerts"]) for case in evaluations if case["alertname"] == rule["alert"]]
        assert True in outcomes and False in outcomes, f"{rule['alert']}: fires {outcomes}"


# -- the dashboard --------------------------------------------------------------------------------

def test_the_dashboard_has_its_variables_and_every_panel_uses_them():
    board = dashboard()
    assert board["schemaVersion"] >= 39 and board["uid"] and board["title"]
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["job"]["type"] == variables["instance"]["type"] == "query"
    assert "$job" in variables["instance"]["query"]["query"]
    source = {"type": "prometheus", "uid": "${datasource}"}
    for panel in panels(board):
        assert panel["title"] and panel["datasource"] == source, panel["title"]
        assert panel["targets"], panel["title"]
        assert len({target["refId"] for target in panel["targets"]}) == len(panel["targets"]), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == source, panel["title"]
            assert '$job"' in target["expr"], f"{panel['title']}: {target['expr']} ignores the job variable"


def test_the_dashboard_s_panels_have_unique_ids_and_do_not_overlap():
    board = dashboard()
    inside_rows = [panel for row in board["panels"] if row["type"] == "row" for panel in row.get("panels", [])]
    ids = [panel["id"] for panel in board["panels"] + inside_rows]
    assert len(ids) == len(set(ids))
    taken = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_the_dashboard_has_the_panels_operators_look_for():
    titles = {panel["title"] for panel in panels(dashboard())}
    assert {"Guests by state", "Reaped per second, by reason", "Sweep duration", "Time since last sweep",
            "Pending cascades and dead letters", "Cascade failures per second, by target", "Circuits open",
            "Leader and paused, by replica", "Redis reachable, by replica", "Writer clock skew",
            "Resident memory", "CPU", "Build info"} <= titles


# -- a real Prometheus (last: see the stack fixture) ----------------------------------------------

def test_a_real_prometheus_scrapes_reaper_and_evaluates_the_rules(stack):
    prometheus = stack.prometheus
    daemon, cron = (f'{{job="{JOB}", instance="{target.address}"}}' for target in (stack.reaper, stack.cron))
    both_scraped = f"reaper_leader{daemon} and on () reaper_last_run_exit_code{cron}"
    assert wait_for(lambda: prometheus.query(both_scraped), timeout=30, interval=0.1), prometheus.log()[-4000:]
    scraped_at = datetime.now().astimezone()
    [leader] = prometheus.query(f"reaper_leader{daemon}")
    assert float(leader["value"][1]) == 1
    [exit_code] = prometheus.query(f"reaper_last_run_exit_code{cron}")
    assert float(exit_code["value"][1]) == 0

    # Prometheus renames reaper's own `job` label, as the dashboard's "Job failures" expects.
    failures = prometheus.query(f'reaper_job_failures_total{{job="{JOB}"}}')
    assert {series["metric"]["job_name"] for series in failures} == {"sweep", "cascade", "cleanup"}

    def evaluated_since_scrape() -> list[dict]:
        rules = [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
        fresh = all(_timestamp(rule["lastEvaluation"]) > scraped_at for rule in rules)
        return rules if rules and fresh else []

    assert wait_for(evaluated_since_scrape, timeout=30, interval=0.1), prometheus.log()[-4000:]
    loaded = {rule["name"]: rule for rule in evaluated_since_scrape()}
    assert set(loaded) == {rule["alert"] for rule in alerts()}
    for rule in alerts():
        got = loaded[rule["alert"]]
        assert (got["type"], got["health"]) == ("alerting", "ok"), got
        assert got["duration"] == seconds(rule["for"]) and got["labels"] == rule["labels"]
        assert metric_names(got["query"]) == metric_names(rule["expr"]), (got["query"], rule["expr"])
    # A healthy reaper, leading and sweeping: no alert even pending.
    assert prometheus.query("ALERTS") == []


def _timestamp(text: str) -> datetime:
    """Prometheus' RFC 3339 time with nanoseconds, to microseconds."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    return datetime.fromisoformat(text)


def as_promql(query: str) -> str:
    """A dashboard query with its variables as Grafana fills them for this job and every instance
    (a label_values() variable query becomes its selector)."""
    match = re.fullmatch(r"label_values\((.*), *\w+\)", query)
    query = match[1] if match else query
    return query.replace("$__rate_interval", "1m").replace("$job", JOB).replace("$instance", ".*")


def test_every_dashboard_query_shows_data_through_a_real_prometheus(stack):
    empty = [as_promql(query) for query in dashboard_queries(dashboard())]

    def all_answered() -> bool:  # a rate needs two scrapes within its range
        empty[:] = [query for query in empty if not stack.prometheus.query(query)]
        return not empty

    assert wait_for(all_answered, timeout=30, interval=0.2), f"no data for: {empty}"
