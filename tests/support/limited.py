"""`python -m reaper` started under chosen open-files limits (RLIMIT_NOFILE), as systemd or a
container would start it."""

import subprocess
import sys

from .daemons import Daemon, Launcher


def limited_command(nofile: tuple[int, int], *args: str) -> list[str]:
    """`python -m reaper <args>` under these (soft, hard) open-files limits: set, then exec'd
    (the same process, so /proc/<pid>/limits is reaper's)."""
    prelude = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({}, {})); "
               "os.execv(sys.executable, [sys.executable, '-m', 'reaper', *sys.argv[1:]])").format(*nofile)
    return [sys.executable, "-c", prelude, *args]


class LimitedLauncher(Launcher):
    def start_limited(self, nofile: tuple[int, int], *args: str, **env: str) -> Daemon:
        log_path = self.workdir / f"limited-stderr-{len(self.started)}.log"
        with open(log_path, "wb") as stderr:
            proc = subprocess.Popen(limited_command(nofile, *args), cwd=self.workdir, env=self.environ(env),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        self.started.append(proc)
        return Daemon(proc, log_path)


def open_files_limits(pid: int) -> tuple[str, str]:
    """(soft, hard) of a running process, as /proc/<pid>/limits says them."""
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                return tuple(line.split()[3:5])
    raise AssertionError(f"no Max open files line for {pid}")
