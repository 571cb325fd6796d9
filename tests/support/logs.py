"""Capturing what reaper logs, for assertions."""

import logging
import sys

import pytest
from loguru import logger


class Logs:
    """Every loguru record emitted while installed, as (level name, message)."""

    def __init__(self):
        self.records: list[tuple[str, str]] = []
        self._sink = logger.add(self._keep, level="DEBUG", format="{message}")

    def _keep(self, message) -> None:
        self.records.append((message.record["level"].name, message.record["message"]))

    def __iter__(self):
        return iter(list(self.records))

    def at(self, level: str, containing: str = "") -> list[str]:
        return [m for lvl, m in self.records if lvl == level and containing in m]

    def close(self) -> None:
        logger.remove(self._sink)


@pytest.fixture(autouse=True)
def restore_logging():
    """For tests that configure logging as the CLI does: loguru and the standard library's
    logging back to stderr afterwards."""
    yield
    logger.remove()
    logger.add(sys.stderr)
    logging.basicConfig(handlers=[logging.StreamHandler()], level=logging.WARNING, force=True)
