"""A minimal, fast loopback auth-service for bench/sweep.py --mode cascade: one asyncio process,
HTTP/1.1 keep-alive, 200 ``{}`` to every request. tests/support/standin.StandIn (a thread per
connection, a lock and a record per request) is built for inspection, not speed.

    python bench/fast_standin.py      # prints "PORT <n>", then serves until killed

It counts ``DELETE /auth/guest/<id>`` (cleanup calls aside) with the monotonic time of the first
and last one (CLOCK_MONOTONIC is system-wide, so other processes can compare), and sums the
pauses of more than 10 ms between two DELETEs: time in which the client had no request in flight.
``GET /_stats`` returns them as JSON and ``POST /_reset`` zeroes them.
"""

import asyncio
import json
import time

GUEST_PREFIX = b"/auth/guest/"
NOT_GUESTS = (b"/auth/guest/cleanup",)  # also matches cleanup-all
GAP_S = 0.010  # a pause this long means nobody was sending: the client did other work
_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class Counts:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.deletes, self.first, self.last = 0, None, None
        self.gaps, self.gap_s = 0, 0.0  # pauses of more than GAP_S between two DELETEs

    def delete(self) -> None:
        now = time.monotonic()
        if self.last is not None and now - self.last > GAP_S:
            self.gaps += 1
            self.gap_s += now - self.last
        self.deletes += 1
        self.last = now
        if self.first is None:
            self.first = now

    def as_json(self) -> bytes:
        return json.dumps({"deletes": self.deletes, "first": self.first, "last": self.last,
                           "gaps": self.gaps, "gap_s": self.gap_s}).encode()


class Http(asyncio.Protocol):
    def __init__(self, counts: Counts):
        self.counts, self.buffer, self.transport = counts, b"", None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end]
            length = _content_length(head)
            if len(self.buffer) < head_end + 4 + length:
                return  # the body is still on its way
            self.buffer = self.buffer[head_end + 4 + length:]
            self.transport.write(self._answer(head))

    def _answer(self, head: bytes) -> bytes:
        method, path = head.split(b" ", 2)[:2]
        if method == b"DELETE" and path.startswith(GUEST_PREFIX) and not path.startswith(NOT_GUESTS):
            self.counts.delete()
        elif path == b"/_stats":
            body = self.counts.as_json()
            return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body))
        elif path == b"/_reset":
            self.counts.reset()
        return _OK


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


async def serve() -> None:
    counts = Counts()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Http(counts), "127.0.0.1", 0, backlog=1024)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve())
