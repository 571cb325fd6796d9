"""Reads the YAML subset the deploy/ examples are written in, so tests can check their structure
without adding PyYAML: block mappings and sequences by indentation, `- key: value` items,
comments, plain, quoted and JSON-style flow scalars (["run", "--once"]). Anything else (anchors,
multi-line strings, tabs, several documents) is refused with the line number, so an example
that drifts out of the subset fails loudly instead of being half-read."""

import json
import re

_KEY = re.compile(r"^(?P<key>[A-Za-z0-9_./-]+):(?:\s+(?P<value>.*))?$")


class YamlSubsetError(ValueError):
    pass


def load(text: str):
    lines = list(_lines(text))
    value, end = _block(lines, 0, lines[0][0] if lines else 0)
    if end != len(lines):
        raise YamlSubsetError(f"line {lines[end][2]}: unexpected indentation")
    return value


def _lines(text: str):
    for number, raw in enumerate(text.splitlines(), 1):
        if "\t" in raw:
            raise YamlSubsetError(f"line {number}: a tab")
        content = _strip_comment(raw).rstrip()
        if not content.strip():
            continue
        if content.strip() == "---" or content.lstrip()[:1] in ("&", "*", "|", ">", "!"):
            raise YamlSubsetError(f"line {number}: outside the subset: {content.strip()!r}")
        indent = len(content) - len(content.lstrip(" "))
        yield indent, content.strip(), number


def _strip_comment(line: str) -> str:
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] == " "):
            return line[:i]
    return line


def _block(lines, i, indent):
    """The mapping or sequence whose entries start at column ``indent`` from line i."""
    if lines[i][1].startswith("- ") or lines[i][1] == "-":
        return _sequence(lines, i, indent)
    return _mapping(lines, i, indent)


def _sequence(lines, i, indent):
    items = []
    while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("-"):
        rest = lines[i][1][1:].strip()
        if not rest:
            value, i = _block(lines, i + 1, lines[i + 1][0])
        elif _KEY.match(rest) and not rest.startswith(("[", '"', "'")):
            # "- key: value": the item is a mapping whose keys sit two columns in
            lines[i] = (indent + 2, rest, lines[i][2])
            value, i = _mapping(lines, i, indent + 2)
        else:
            value, i = _scalar(rest, lines[i][2]), i + 1
        items.append(value)
    return items, i


def _mapping(lines, i, indent):
    mapping = {}
    while i < len(lines) and lines[i][0] == indent:
        indent_, content, number = lines[i]
        match = _KEY.match(content)
        if not match:
            raise YamlSubsetError(f"line {number}: expected key: value, got {content!r}")
        key, value = match["key"], match["value"]
        if key in mapping:
            raise YamlSubsetError(f"line {number}: duplicate key {key!r}")
        if value is None:
            nested = i + 1 < len(lines) and (lines[i + 1][0] > indent or
                                              (lines[i + 1][0] == indent and lines[i + 1][1].startswith("-")))
            if not nested:
                raise YamlSubsetError(f"line {number}: {key!r} has no value")
            mapping[key], i = _block(lines, i + 1, lines[i + 1][0])
        else:
            mapping[key], i = _scalar(value, number), i + 1
    if i < len(lines) and lines[i][0] > indent:
        raise YamlSubsetError(f"line {lines[i][2]}: unexpected indentation")
    return mapping, i


def _scalar(text: str, number: int):
    if text[:1] in ("&", "*", "|", ">", "!"):
        raise YamlSubsetError(f"line {number}: outside the subset: {text!r}")
    if text.startswith(("[", "{", '"')):
        try:
            return json.loads(text)
        except ValueError:
            raise YamlSubsetError(f"line {number}: not a JSON-style flow value: {text!r}") from None
    if text.startswith("'"):
        if not text.endswith("'") or len(text) < 2:
            raise YamlSubsetError(f"line {number}: unterminated quote")
        return text[1:-1].replace("''", "'")
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text
