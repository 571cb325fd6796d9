"""A clock that moves only when a test says so: time is an argument, never a sleep."""

import threading


class ManualClock:
    def __init__(self, start: float = 1000.0):
        self._now = start
        self._lock = threading.Lock()
        self.reads = 0  # how many times the code under test looked: a thread polling it shows here

    def __call__(self) -> float:
        with self._lock:
            self.reads += 1
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


class WallClock:
    """Steps the wall clock that this process's Python code reads, while ``time.monotonic``
    moves on as before: the in-process stand-in for stepping the host's clock (an LD_PRELOAD
    shim such as libfaketime does it for a whole process).

    Installed with pytest's ``monkeypatch``: ``time.time``, ``time.time_ns`` and the
    ``datetime.datetime`` class, in the ``time`` and ``datetime`` modules and wherever a loaded
    module imported them by name (``from datetime import datetime``), so a library that reads
    the wall clock either way sees the step. What a module imports while one is installed keeps
    the shifted functions, which follow whichever WallClock is installed (none: no offset)."""

    SPARED = ("_pytest", "pytest", "pluggy")  # the test runner keeps the real clock

    def __init__(self, monkeypatch):
        _OFFSET[0] = 0.0
        self._patch(monkeypatch)

    @property
    def offset_s(self) -> float:
        return _OFFSET[0]

    def step(self, seconds: float) -> None:
        _OFFSET[0] += seconds

    def close(self) -> None:
        _OFFSET[0] = 0.0

    def _patch(self, monkeypatch) -> None:
        import sys

        swaps = _swaps()
        for name, module in list(sys.modules.items()):
            if module is None or name.startswith(self.SPARED) or name == __name__:
                continue
            for attr in ("time", "time_ns", "datetime"):
                value = getattr(module, attr, None)
                swap = swaps.get(id(value))
                if swap is not None and value is not swap:
                    monkeypatch.setattr(module, attr, swap)


_OFFSET = [0.0]  # seconds the wall clock is stepped by, for every shifted function made here
_SHIFTED: dict = {}  # the real time.time, time.time_ns, datetime.datetime -> their shifted ones


def _swaps() -> dict:
    """{id(real or shifted): shifted}, the shifted ones made once per process."""
    import datetime as datetime_module
    import time

    if not _SHIFTED:
        real_time, real_time_ns, real_datetime = time.time, time.time_ns, datetime_module.datetime
        _SHIFTED.update({
            "time": (real_time, lambda: real_time() + _OFFSET[0]),
            "time_ns": (real_time_ns, lambda: real_time_ns() + round(_OFFSET[0] * 1e9)),
            "datetime": (real_datetime, _shifted_datetime(real_datetime)),
        })
    swaps = {}
    for real, shifted in _SHIFTED.values():
        swaps[id(real)] = swaps[id(shifted)] = shifted
    return swaps


def _shifted_datetime(real):
    """A datetime class whose now(), utcnow() and today() are _OFFSET seconds off; real datetimes
    are still instances of it (as with freezegun), so isinstance checks keep working."""
    from datetime import timedelta

    class Meta(type):
        def __instancecheck__(cls, obj):
            return isinstance(obj, real)

    class Shifted(real, metaclass=Meta):
        @classmethod
        def now(cls, tz=None):
            return real.now(tz) + timedelta(seconds=_OFFSET[0])

        @classmethod
        def utcnow(cls):
            return real.utcnow() + timedelta(seconds=_OFFSET[0])

        @classmethod
        def today(cls):
            return cls.now()

    return Shifted
