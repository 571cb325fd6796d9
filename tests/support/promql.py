"""The metric names a PromQL expression reads, for checking alert rules and dashboards against
a live /metrics. promtool has no parse-only command for a bare expression, so this is a small
lexer: strings, comments, label matchers, ranges, numbers and durations are skipped; an
identifier is a function when a parenthesis follows, a keyword or aggregation by its name,
a label name inside a grouping list, and otherwise a metric name. An unknown function or a
name matched by regex (``{__name__=~"..."}``) is an error, so a typo cannot pass as a name."""

import json
import re

FUNCTIONS = frozenset("""
    abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes clamp
    clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year days_in_month
    deg delta deriv double_exponential_smoothing end exp floor histogram_avg histogram_count
    histogram_fraction histogram_quantile histogram_stddev histogram_stdvar histogram_sum
    holt_winters hour idelta increase info irate label_join label_replace last_over_time ln log10
    log2 mad_over_time max_over_time min_over_time minute month pi predict_linear
    present_over_time quantile_over_time rad rate resets round scalar sgn sin sinh sort
    sort_by_label sort_by_label_desc sort_desc sqrt start stddev_over_time stdvar_over_time
    sum_over_time tan tanh time timestamp vector year""".split())
AGGREGATIONS = frozenset("""avg bottomk count count_values group limit_ratio limitk max min
    quantile stddev stdvar sum topk""".split())
GROUPINGS = frozenset("by without on ignoring group_left group_right".split())
KEYWORDS = GROUPINGS | AGGREGATIONS | {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}

_TOKEN = re.compile(r"""
    (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<comment>\#[^\n]*)
  | (?P<number>0[xX][0-9a-fA-F]+
               | (?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?   # a number, or a duration: 1h30m, 500ms
                 (?:(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<space>\s+)
  | (?P<op>==|!=|<=|>=|=~|!~|[-+*/%^<>=(){}\[\],@])
""", re.VERBOSE)

# Grafana's variables: the interval ones stand where a duration goes; any other becomes a number
# (inside a label matcher's string it is skipped with the string).
_GRAFANA_INTERVAL = re.compile(r"\$__(?:rate_interval|interval|range)(?:_ms|_s)?\b"
                               r"|\$\{__(?:rate_interval|interval|range)\}")
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+(?::\w+)?\]\]")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<args>.*)\)\s*$", re.DOTALL)


class PromQLError(ValueError):
    pass


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects."""
    tokens = _tokens(expr)
    names, i = set(), 0
    while i < len(tokens):
        kind, text = tokens[i]
        if text == "{":
            i, named = _matchers(tokens, i + 1, expr)
            names |= named
        elif text == "[":
            i = _closing(tokens, i, "[", "]", expr)
        elif kind == "ident":
            i, name = _identifier(tokens, i, expr)
            names |= {name} - {None}
        i += 1
    return names


def grafana_names(expr: str) -> set[str]:
    """The metric names of a Grafana panel or variable query (Grafana's variables substituted;
    ``label_values(selector, label)`` reads the selector)."""
    expr = _GRAFANA_VARIABLE.sub("1", _GRAFANA_INTERVAL.sub("5m", expr))
    match = _LABEL_VALUES.match(expr)
    if match:
        selector, _, _label = match["args"].rpartition(",")
        return metric_names(selector) if selector.strip() else set()
    return metric_names(expr)


def _tokens(expr: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if not match:
            raise PromQLError(f"unexpected {expr[pos]!r} at {pos} in {expr!r}")
        if match.lastgroup not in ("space", "comment"):
            tokens.append((match.lastgroup, match.group()))
        pos = match.end()
    return tokens


def _identifier(tokens, i, expr) -> tuple[int, str | None]:
    """Past the identifier at ``i`` (and a grouping's label list): (index, a metric name or None)."""
    text = tokens[i][1]
    follows = tokens[i + 1][1] if i + 1 < len(tokens) else None
    if text.lower() in GROUPINGS:
        return (_closing(tokens, i + 1, "(", ")", expr) if follows == "(" else i), None
    if text.lower() in KEYWORDS:
        return i, None
    if follows == "(":
        if text not in FUNCTIONS:
            raise PromQLError(f"unknown function {text!r} in {expr!r}")
        return i, None
    return i, text


def _matchers(tokens, i, expr) -> tuple[int, set[str]]:
    """From inside ``{`` to its ``}``: (that index, the names set by ``__name__="..."``)."""
    names = set()
    while i < len(tokens) and tokens[i][1] != "}":
        if tokens[i][1] == "__name__":
            op, value = tokens[i + 1][1], tokens[i + 2]
            if op != "=" or value[0] != "string":
                raise PromQLError(f"__name__ {op} cannot be checked for a name, in {expr!r}")
            names.add(_unquote(value[1]))
            i += 2
        i += 1
    if i == len(tokens):
        raise PromQLError(f"unclosed {{ in {expr!r}")
    return i, names


def _closing(tokens, i, opening, closing, expr) -> int:
    depth = 0
    for j in range(i, len(tokens)):
        depth += {opening: 1, closing: -1}.get(tokens[j][1], 0)
        if depth == 0:
            return j
    raise PromQLError(f"unclosed {opening} in {expr!r}")


def _unquote(literal: str) -> str:
    if literal[0] == "`":
        return literal[1:-1]
    if literal[0] == "'":
        literal = '"' + literal[1:-1].replace('"', '\\"').replace("\\'", "'") + '"'
    return json.loads(literal)
