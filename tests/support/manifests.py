"""The YAML files under deploy/, read with PyYAML's safe loader, which here also refuses a key
given twice in one mapping (YAML allows it and the last one would silently win)."""

from pathlib import Path

import yaml


class _UniqueKeys(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_all(text: str) -> list:
    """Every document of a YAML stream (empty ones dropped)."""
    return [doc for doc in yaml.load_all(text, Loader=_UniqueKeys) if doc is not None]


def load(text: str):
    """The one document of a YAML text."""
    (doc,) = load_all(text)
    return doc


def load_file(path: Path) -> list:
    return load_all(path.read_text())
