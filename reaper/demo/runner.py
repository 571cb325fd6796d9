"""`reaper demo`: a private Redis, stand-in services, a simulated signaling server and the
real reaper, watched for ``duration`` seconds, then a verdict. Nothing is left behind: the
children are stopped and the temporary directory removed on every way out, Ctrl-C included.

    start redis → stand-ins → signaling → `reaper run` → watch → finish → stop all → summary
"""

import os
import signal
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import redis

from reaper.core.config import load_config
from reaper.core.keys import Keys
from reaper.demo.errors import DemoError
from reaper.demo.events import Journal
from reaper.demo.process import ReaperProcess, reaper_environ
from reaper.demo.redis_server import PrivateRedis, RedisServerMissing, free_port
from reaper.demo.signaling import CONNECTION, ONLINE, Signaling, plan
from reaper.demo.standins import StandIns
from reaper.demo.summary import Facts, judge, render
from reaper.demo.timings import Timings
from reaper.demo.view import Screen, Snapshot, guest_state

EXIT_PASS, EXIT_FAIL, EXIT_MISSING, EXIT_INTERRUPTED = 0, 1, 3, 130
REFRESH_S = 0.5  # the view is redrawn about twice a second


def run_demo(duration_s: float, out=None, live: bool | None = None) -> int:
    """Run the whole demo; the exit code: 0 all dead guests reaped and nobody else touched,
    1 otherwise, 3 no redis-server, 130 interrupted."""
    screen, err = Screen(out, live), out or sys.stderr
    try:
        with _interrupt_on_sigterm(), tempfile.TemporaryDirectory(prefix="reaper-demo-") as tmp:
            outcome, text = Demo(Path(tmp), duration_s, Timings(), screen).run()
        code, stream = (EXIT_PASS if outcome.ok else EXIT_FAIL), screen.out
        message = text + "\nEverything the demo started is stopped, and its temporary files are removed."
    except RedisServerMissing as exc:
        code, stream, message = EXIT_MISSING, err, f"reaper demo: {exc}"
    except DemoError as exc:
        code, stream, message = EXIT_FAIL, err, f"reaper demo: {exc}"
    except KeyboardInterrupt:
        code, stream = EXIT_INTERRUPTED, err
        message = "\nreaper demo: interrupted; every process it started is stopped and its files removed"
    finally:
        screen.close()
    print(message, file=stream)
    return code


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def _interrupt_on_sigterm():
    """SIGTERM and SIGHUP stop the demo the way Ctrl-C does: through every cleanup."""
    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _finish_cleanup_first() -> None:
    """A second Ctrl-C must not cut the cleanup short and leave a child running."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class Demo:
    def __init__(self, workdir: Path, duration_s: float, timings: Timings, screen: Screen):
        self.workdir, self.duration_s, self.timings, self.screen = workdir, duration_s, timings, screen
        self.journal = Journal()
        self.touched: set[str] = set()
        self.endpoints: dict[str, str] = {}
        self._metrics_url, self._metrics_tried_at = "", 0.0
        self._view: dict = {}

    def run(self):
        """(Outcome, summary text); every child stopped before it returns or raises."""
        with ExitStack() as stack:
            try:
                self._start(stack)
                self._watch("running", self.signaling.started + self.duration_s)
                self._watch("finishing", time.monotonic() + self.timings.settle_s, self._settled)
                self._tick("stopping")
            finally:
                _finish_cleanup_first()
            reaper_exit = self.reaper.stop()
            for event in self.reaper.drain():
                self.journal.add(event)
            facts = self._facts(reaper_exit)
            elapsed = self.signaling.elapsed()
        outcome = judge(facts)
        return outcome, render(outcome, elapsed, self.journal.sweeps)

    # -- starting
    def _start(self, stack: ExitStack) -> None:
        self.redis = PrivateRedis(self.workdir)
        stack.callback(self.redis.stop)
        self.redis.start()  # first: without redis-server there is nothing to start the rest for
        self.screen.say("reaper demo: a private redis-server, the stand-in services, a simulated "
                        "signaling server and `reaper run` are starting")
        self.client = self.redis.client()
        stack.callback(self.client.close)
        self.services = stack.enter_context(StandIns())
        self.scenario = plan(self.duration_s, self.timings)
        for user_id in [g.user_id for g in self.scenario.guests] + list(self.scenario.registered):
            self.services.auth.add_user(user_id)
        self.signaling = Signaling(self.client, self.scenario, self.timings).start()
        stack.callback(self.signaling.stop)
        self.reaper = self._reaper()
        stack.callback(self.reaper.stop)
        self.endpoints = {"redis": self.redis.url, "auth-service": self.services.auth.url,
                          "user-service": self.services.users.url}
        self.screen.say("  " + ", ".join(f"{name} {url}" for name, url in self.endpoints.items()))

    def _reaper(self) -> ReaperProcess:
        config_file = self.workdir / "reaper.toml"
        config_file.write_text("# reaper demo: everything is in REAPER_* variables\n")
        self._listen = f"127.0.0.1:{free_port()}"
        environ = reaper_environ(dict(os.environ), config_file, self.redis.url, self.services.auth.url,
                                 self.services.users.url, self._listen, self.timings)
        # The child reads the same variables: a bad one fails here, before it starts.
        self.keys = Keys.from_config(load_config(None, environ).redis)
        return ReaperProcess(environ, self.workdir).start()

    # -- watching
    def _watch(self, phase: str, until: float, done=lambda: False) -> None:
        while True:
            self._tick(phase)
            self._check_children()
            if done() or time.monotonic() >= until:
                return
            time.sleep(REFRESH_S)  # the view's refresh period, not a wait for anything

    def _check_children(self) -> None:
        code = self.reaper.exit_code
        if code is not None:
            tail = "\n".join(self.reaper.tail)
            raise DemoError(f"`reaper run` stopped on its own with exit code {code}; its last lines:\n{tail}")
        if self.signaling.error is not None:
            raise DemoError(f"the simulated signaling server lost Redis: {self.signaling.error}")

    def _tick(self, phase: str) -> None:
        for event in self.reaper.drain():
            self.journal.add(event)
        self._view = self._observe()
        self._probe_metrics()
        self.screen.show(self._snapshot(phase))

    def _observe(self) -> dict:
        """Redis as it is now: which guests are still there, the registered entries, cascades."""
        guests = self.scenario.guests
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.hgetall(ONLINE)
                for guest in guests:
                    pipe.exists(CONNECTION + guest.socket_id)
                pipe.zcard(self.keys.due)
                pipe.llen(self.keys.dead)
                online, *exists, pending, dead = pipe.execute()
        except redis.RedisError as exc:
            raise DemoError(f"the demo's redis-server stopped answering: {exc}") from exc
        present = {g.user_id: bool(found) or g.user_id in online for g, found in zip(guests, exists)}
        return {"online": online, "present": present, "pending": pending, "dead": dead}

    def _states(self) -> Counter:
        joined, t, states = self.signaling.joined(), self.signaling.elapsed(), Counter()
        for guest in self.scenario.guests:
            state = guest_state(guest.user_id in joined, guest.alive_at(t), self._view["present"][guest.user_id])
            states[state] += 1
            if state == "touched":
                self.touched.add(guest.user_id)
        self.touched |= self.signaling.lost
        return states

    def _settled(self) -> bool:
        """Every dead guest gone from Redis and the auth-service, no cascade left."""
        deleted = self.services.auth.deleted()
        return self._view["pending"] == 0 and all(
            not self._view["present"][g.user_id] and deleted[g.user_id] for g in self.scenario.guests if g.dies)

    def _probe_metrics(self) -> None:
        """Show the metrics URL once `reaper run` serves it (server.listen)."""
        now = time.monotonic()
        if self._metrics_url or now - self._metrics_tried_at < 1.0:
            return
        self._metrics_tried_at = now
        url = f"http://{self._listen}/metrics"
        try:
            answered = httpx.get(url, timeout=0.3).status_code == 200
        except httpx.HTTPError:
            answered = False
        if answered:
            self._metrics_url = self.endpoints["metrics"] = url
            self.screen.say(f"metrics: {url}")

    def _snapshot(self, phase: str) -> Snapshot:
        online = self._view["online"]
        return Snapshot(elapsed_s=self.signaling.elapsed(), duration_s=self.duration_s, phase=phase,
                        states=self._states(), registered=sum(u in online for u in self.scenario.registered),
                        reaped=Counter(self.journal.reaped), pending=self._view["pending"],
                        dead_letters=self._view["dead"], sweeps=self.journal.sweeps,
                        last_sweep=self.journal.last_sweep, decisions=tuple(self.journal.decisions),
                        notices=tuple(self.journal.notices), stats=self.journal.stats,
                        endpoints=dict(self.endpoints))

    def _facts(self, reaper_exit: int | None) -> Facts:
        view = self._observe()
        self._view = view
        self._states()
        registered = {u: view["online"].get(u) for u in self.scenario.registered}
        cleanups = sum(self.services.auth.cleanups.values()) + sum(self.services.users.cleanups.values())
        return Facts(self.scenario, view["present"], registered, set(self.touched), self.services.auth.deleted(),
                     Counter(self.journal.reaped), self.journal.reaped_users(), view["pending"], view["dead"],
                     reaper_exit, cleanups)
