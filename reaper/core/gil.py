"""The GIL handed over quickly while the sweep's threads take turns at Redis.

A sweep runs a thread that reads the next page (store.read_ahead) and one that sends the takes
of the last (sweep/threads.OneBehind) while the main thread judges. After each reply the
waiting thread needs the GIL back to handle it and send the next call; at Python's default it
changes hands every 5 ms, so the judging held it that long while Redis sat idle. Each hand-over
costs both threads a wake-up, though, so the interval is short only while it pays: while a take
call runs (OneBehind, per call) and while a reader reads one request at a time; not while the
record or users:online pages are asked for ahead (store/scan_ahead.py), whose next request is
in Redis already (those the judging thread reads itself, with no reader at all: sweep/reading.py).
Measured at 1M guests, in one process on one fill, 4 runs each alternated: held for the whole
sweep (as before), 13.8 s wall and 12.7 s CPU; never, 12.8 s and 10.3 s; as now, 12.1 s and
10.6 s, the second look's takes the quickest of the three (3.0 s, against 3.6 and 3.8).
"""

import sys
import threading

SWITCH_S = 0.0001


class QuickSwitches:
    """While anyone holds it, the switch interval is at most SWITCH_S; the last to release it
    restores what was set before. Also a context."""

    def __init__(self):
        self._lock = threading.Lock()
        self._holders, self._saved = 0, 0.0

    def hold(self) -> None:
        with self._lock:
            if self._holders == 0:
                self._saved = sys.getswitchinterval()
                sys.setswitchinterval(min(self._saved, SWITCH_S))
            self._holders += 1

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0:
                sys.setswitchinterval(self._saved)

    def __enter__(self) -> None:
        self.hold()

    def __exit__(self, *exc) -> None:
        self.release()


quick_switches = QuickSwitches()
