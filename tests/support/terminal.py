"""Running `python -m reaper` on a real terminal (a pty), as an operator answering its question."""

import os
import select
import subprocess
import sys
import time
from pathlib import Path

QUESTION = b"[y/N]"


def on_terminal(args: list[str], env: dict, answer: str = "", cwd: Path | None = None,
                deadline_s: float = 60, stderr_only: bool = False) -> tuple[int, str]:
    """Exit code and everything shown; ``answer`` is typed once the question shows. The deadline
    only turns a hang into a failure with the output so far. ``stderr_only``: only stderr is the
    terminal (stdin and stdout are /dev/null), as under a wrapper that pipes the rest."""
    master, slave = os.openpty()
    others = subprocess.DEVNULL if stderr_only else slave
    proc = subprocess.Popen([sys.executable, "-m", "reaper", *args], stdin=others, stdout=others,
                            stderr=slave, env=env, cwd=cwd)
    os.close(slave)
    output = b""
    try:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal: it exited
                break
            if not chunk:
                break
            output += chunk
            if answer and QUESTION in output:
                os.write(master, answer.encode() + b"\n")
                answer = ""
        return proc.wait(10), output.decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def operator_env(extra: dict) -> dict:
    """The machine's environment without reaper's or Redis's variables, plus ``extra``."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("REAPER_", "REDIS_"))}
    return {**inherited, **extra}
