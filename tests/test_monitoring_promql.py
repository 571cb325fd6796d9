"""tests/support/promql.py: the metric names a PromQL expression (or a Grafana query) reads, as
the monitoring kit's tests use them to check the rules and the dashboard against a live
/metrics. Tricky expressions, and what cannot be read, refused."""

import re

import pytest

from support.promql import PromQLError, grafana_names, metric_names

@pytest.mark.parametrize("expr, names", [
    ('sum by (job, instance) (rate(foo_total{job="a", le=~"0.5|1"}[5m]))', {"foo_total"}),
    ("a and on (instance) (b == 1)", {"a", "b"}),
    ("x unless ignoring(le) y", {"x", "y"}),
    ("a * on (instance) group_left (version) b", {"a", "b"}),
    ("a * on () group_right c", {"a", "c"}),
    ('label_replace(up, "x", "$1", "instance", "(.*):.*")', {"up"}),
    ('count_values("version", build_info)', {"build_info"}),
    ('{__name__="reaper_leader", job="r"}', {"reaper_leader"}),
    ("{__name__='single_quoted'}", {"single_quoted"}),
    ('{job="no name"}', set()),
    ("histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m:30s] offset 1h30m)))", {"h_bucket"}),
    ("time() - max(ts) > 3 * 30", {"ts"}),
    ("x @ start()", {"x"}),
    ("topk(5, a) or vector(0)", {"a"}),
    ("a > Inf or b < -NaN", {"a", "b"}),
    ("SUM BY (job) (a) AND b", {"a", "b"}),
    ("a # b c\n + d", {"a", "d"}),
    ('label_replace(a, "x", "}{)(", "y", "")', {"a"}),
    ("job:reaper_up:sum > 0x1F + 1e-3 + .5", {"job:reaper_up:sum"}),
    ('x{on="a", rate="b", by="c"}', {"x"}),
    ("a > bool 1", {"a"}),
    ("sum(x) without (instance)", {"x"}),
    ("absent(up{job=\"reaper\"} == 1)", {"up"}),
    ("changes(process_start_time_seconds[1h]) > 2", {"process_start_time_seconds"}),
    ('"offset" == `by`', set()),
])
def test_metric_names_of_tricky_expressions(expr, names):
    assert metric_names(expr) == names


@pytest.mark.parametrize("expr, names", [
    ('rate(x{job="$job", instance=~"$instance"}[$__rate_interval])', {"x"}),
    ("sum(increase(y[${__range}])) / $scale", {"y"}),
    ('label_values(reaper_leader{job="$job"}, instance)', {"reaper_leader"}),
    ("label_values(job)", set()),
    ('histogram_quantile($quantile, sum by (le) (rate(h_bucket{instance=~"${instance:regex}"}[5m])))', {"h_bucket"}),
])
def test_metric_names_of_grafana_queries(expr, names):
    assert grafana_names(expr) == names


@pytest.mark.parametrize("expr, error", [
    ("rat(x[5m])", "unknown function 'rat'"),
    ('{__name__=~"reaper_.*"}', "__name__ =~"),
    ('x{job="a"', "unclosed {"),
    ("sum by (job x", "unclosed ("),
    ("x ; y", "unexpected ';'"),
])
def test_what_cannot_be_read_for_names_is_an_error(expr, error):
    with pytest.raises(PromQLError, match=re.escape(error)):
        metric_names(expr)


