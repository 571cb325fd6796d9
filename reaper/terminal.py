"""What reaper shows only to a person at a terminal: a progress line updated in place, and a
screen redrawn by `reaper stats --watch`. Nothing here goes to the logs, and on anything but a
terminal (a pipe, a file, journald) the progress line is not drawn at all."""

import sys
import time
from collections.abc import Callable
from typing import TextIO

CLEAR_LINE = "\x1b[K"  # from the cursor to the end of the line
HOME_AND_CLEAR = "\x1b[H\x1b[2J"
EVERY_S = 0.1  # at most ten redraws a second: a fast loop must not spend its time drawing


class Progress:
    """One line of text, redrawn in place. The cursor is left at the line's start, so a log line
    written meanwhile overwrites it instead of being glued to its end."""

    def __init__(self, stream: TextIO, every_s: float = EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.stream, self.every_s, self.clock = stream, every_s, clock
        self._next = 0.0
        self.shown = False

    def show(self, text: str) -> None:
        now = self.clock()
        if now < self._next:
            return
        self._next = now + self.every_s
        self.stream.write(f"{CLEAR_LINE}{text}\r")
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        """Erase the line, so what comes next starts on a clean one."""
        if self.shown:
            self.stream.write(CLEAR_LINE)
            self.stream.flush()
            self.shown = False


def progress_on(stream: TextIO | None = None) -> Progress | None:
    """A Progress on ``stream`` (stderr) when it is a terminal; None, meaning none, otherwise."""
    stream = sys.stderr if stream is None else stream
    return Progress(stream) if _is_terminal(stream) else None


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def repeat(report: Callable[[], str], interval_s: float, count: int | None, redraw: bool,
           echo: Callable[[str], None], sleep: Callable[[float], None] | None = None) -> None:
    """``report()`` every ``interval_s``, ``count`` times or until Ctrl-C (KeyboardInterrupt is
    the caller's). ``redraw``: clear the screen first (a terminal); else one after the other."""
    done = 0
    while count is None or done < count:
        text = report()
        echo(HOME_AND_CLEAR + text if redraw else text)
        done += 1
        if count is None or done < count:
            (sleep or time.sleep)(interval_s)
