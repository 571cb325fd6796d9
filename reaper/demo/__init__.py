"""`reaper demo`: the real reaper against a simulated signaling stack, with nothing configured.

    redis_server  a private redis-server from PATH on a free loopback port
    standins      loopback auth-service and user-service, counting DELETEs
    signaling     a simulated signaling server: live, dropping, frozen and leftover guests
    process       the real `reaper run` as a child, its JSON log read back
    events        those log lines as events (pure)
    view          the live terminal view or plain lines (rendering is pure)
    summary       the verdict (pure)
    runner        wires them together and leaves nothing behind
"""

from reaper.demo.runner import run_demo

__all__ = ["run_demo"]
