"""The threads the auth-service DELETEs go out on: a small pool of its own rather than a
ThreadPoolExecutor (see Senders)."""

import queue
import threading


class Senders:
    """``count`` threads, each running one job at a time, in the order they are handed; jobs not
    started can be taken back (a stop sends no more), and each job asks the gate itself as it
    starts. Lighter than a ThreadPoolExecutor, which costs a Future, a condition and a callback
    per request: the senders and the writer share one GIL. Measured again behind this very
    interface (issue #13, `bench/sweep.py --mode cascade --cascade-guests 20000 --repeat 3`):
    reaper/httpx 0.97 with these threads, 0.84 with a ThreadPoolExecutor (cancelling futures for
    take_back), with three times the pauses over 10 ms. Its threads are daemons: a DELETE hanging
    at exit does not hold the process (a clean stop waits for those in flight anyway)."""

    def __init__(self, count: int, name: str = "cascade"):
        self.count, self.name = count, name
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._starting = threading.Lock()

    def hand(self, owner, *args) -> None:
        """``owner.run(*args)`` in one of the threads, as soon as one is free."""
        if not self._threads:
            self._start()
        self._inbox.put((owner, args))

    def take_back(self, owner) -> list[tuple]:
        """The arguments of ``owner``'s jobs that no thread has started: they will not run."""
        mine, others = [], []
        while True:
            try:
                job = self._inbox.get_nowait()
            except queue.Empty:
                break
            (mine if job is not None and job[0] is owner else others).append(job)
        for job in others:
            self._inbox.put(job)
        return [args for _, args in mine]

    def close(self) -> None:
        """Once the jobs handed are done, the threads end."""
        for _ in self._threads:
            self._inbox.put(None)
        for thread in self._threads:
            thread.join()
        self._threads = []

    def _start(self) -> None:
        with self._starting:
            for n in range(len(self._threads), self.count):
                thread = threading.Thread(target=self._serve, name=f"{self.name}-{n}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _serve(self) -> None:
        while (job := self._inbox.get()) is not None:
            owner, args = job
            owner.run(*args)
