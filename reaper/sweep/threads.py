"""The sweep's helper that keeps Redis and Python busy at once: answers handled one call behind
(the read-ahead of pages is store.read_ahead). Every thread takes the sweep's turn for each
Redis call, so other clients of Redis never wait behind more than ~3 ms of ours: one command, a
page's MGET with the next SCAN (store.scan_and_read; store/scan_ahead.py, when nothing else is
sent), or two batches of takes (store/windowed.py)."""

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from reaper.core.gil import quick_switches


class OneBehind:
    """Redis calls answered while the next batch is judged: the call for batch i runs in a
    thread of its own, and its answer is handled here, in order, when batch i+1 hands over its
    call (or at flush), so that Redis works while Python judges."""

    def __init__(self):
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="reaper-one-behind")
        self._pending: tuple[Future, Callable] | None = None

    def submit(self, call: Callable, then: Callable) -> None:
        """Start ``call``; ``then(its answer)`` runs here once the next call has started."""
        started = self._worker.submit(self._quickly, call)
        self.flush()
        self._pending = (started, then)

    @staticmethod
    def _quickly(call: Callable):
        # While a call runs, its thread gets the GIL back soon after each reply (core/gil.py).
        with quick_switches:
            return call()

    def flush(self) -> None:
        if self._pending is not None:
            answer, then = self._pending
            self._pending = None
            then(answer.result())

    def close(self) -> None:
        """Wait for the call in flight; its answer is dropped only when we are failing anyway."""
        self._worker.shutdown(wait=True)
