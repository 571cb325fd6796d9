"""scripts/setup, the Quick start's first command, run against stub commands: who runs apt-get
(root itself, or sudo), what it installs, and that a failure stops it with a clear message."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "setup"
EVERY_COMMAND = ("python3", "redis-server", "openssl", "node", "npm", "promtool", "prometheus")
EVERY_PACKAGE = ("ca-certificates", "libfaketime")
NPM_CI = "npm ci --no-audit --no-fund --loglevel=error"

# Each stub appends one line to $CALLS: its name and arguments (apt-get also says how it ran).
RECORD = 'printf "%s\\n" "${0##*/} $*" >> "$CALLS"\n'
STUBS = {
    # An install puts the package's commands on the PATH (stubs too).
    "apt-get": RECORD + 'printf "  frontend=%s sudo=%s\\n" "${DEBIAN_FRONTEND:-}" "${VIA_SUDO:-no}" >> "$CALLS"\n'
                        '[ "${STUB_APT_EXIT:-0}" = 0 ] || exit "$STUB_APT_EXIT"\n'
                        '[ "$1" = install ] || exit 0\n'
                        '[ "${STUB_APT_INSTALL_EXIT:-0}" = 0 ] || exit "$STUB_APT_INSTALL_EXIT"\n'
                        'for word in "$@"; do\n'
                        '  case "$word" in\n'
                        '    nodejs) commands=node ;;\n'
                        '    prometheus) commands="promtool prometheus" ;;\n'
                        '    python3|redis-server|openssl|npm) commands=$word ;;\n'
                        '    *) commands="" ;;\n'
                        '  esac\n'
                        '  for name in $commands; do /bin/cp "$TEMPLATES/$name" "$STUBS/$name"; done\n'
                        'done\n',
    # Like sudo's env_reset: only the VAR=value words given on its command line pass through.
    "sudo": RECORD + 'unset DEBIAN_FRONTEND\nexport VIA_SUDO=yes\n'
                     'while case "$1" in *=*) true ;; *) false ;; esac; do export "$1"; shift; done\n'
                     'exec "$@"\n',
    "id": '[ "$1" = -u ] && echo "$STUB_UID"\n',
    "dpkg-query": 'for name in $STUB_INSTALLED; do\n'
                  '  [ "$name" = "$3" ] && { printf "install ok installed"; exit 0; }\n'
                  'done\nexit 1\n',
    "python3": RECORD + 'case "$*" in\n'
                        '  *version_info*) exit "${STUB_PYTHON_TOO_OLD:-0}" ;;\n'
                        '  *ensurepip*) exit "${STUB_NO_ENSUREPIP:-0}" ;;\n'
                        '  -V) echo "Python 3.10.12" ;;\n'
                        '  "-m venv .venv") /bin/mkdir -p .venv/bin && /bin/cp "$TEMPLATES/pip" .venv/bin/pip'
                        ' && /bin/cp "$TEMPLATES/pip" .venv/bin/python ;;\n'
                        'esac\n',
    "npm": RECORD + 'printf "  in %s\\n" "$PWD" >> "$CALLS"\nexit "${STUB_NPM_EXIT:-0}"\n',
}
PLAIN_STUB = RECORD


class Machine:
    """A copy of the script in a scratch repository, and a PATH holding nothing but stubs."""

    def __init__(self, tmp: Path, *, uid: int = 0, commands=EVERY_COMMAND, packages=EVERY_PACKAGE,
                 sudo: bool = True) -> None:
        self.repo, self.bin, self.templates = tmp / "repo", tmp / "bin", tmp / "templates"
        self.calls_log = tmp / "calls.log"
        (self.repo / "scripts").mkdir(parents=True)
        shutil.copy2(SCRIPT, self.repo / "scripts" / "setup")
        (self.repo / "tests" / "support" / "socketio").mkdir(parents=True)
        (self.repo / "tests" / "support" / "socketio" / "package-lock.json").write_text("{}\n")
        present = {"apt-get", "id", "dpkg-query", *commands} | ({"sudo"} if sudo else set())
        for name in present:
            self._stub(self.bin / name, STUBS.get(name, PLAIN_STUB))
        for name in ("pip", *EVERY_COMMAND):
            self._stub(self.templates / name, STUBS.get(name, PLAIN_STUB))
        self.env = {"PATH": str(self.bin), "STUBS": str(self.bin), "CALLS": str(self.calls_log), "HOME": str(tmp),
                    "TEMPLATES": str(self.templates), "STUB_UID": str(uid),
                    "STUB_INSTALLED": " ".join(packages)}

    @staticmethod
    def _stub(path: Path, body: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)

    def run(self, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(["/bin/sh", str(self.repo / "scripts" / "setup")], cwd=self.bin.parent,
                              env={**self.env, **env}, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=60)

    @property
    def calls(self) -> list[str]:
        return self.calls_log.read_text().splitlines() if self.calls_log.exists() else []

    def apt_calls(self) -> list[str]:
        """Each apt-get call with how it ran: 'apt-get install … | frontend=… sudo=…'."""
        lines = self.calls
        return [f"{line} |{lines[i + 1]}" for i, line in enumerate(lines) if line.startswith("apt-get ")]


def after_apt(machine: Machine) -> list[str]:
    """What ran after the system packages: the venv, pip and npm steps."""
    return [line.split("/")[-1] if line.startswith("pip") else line
            for line in machine.calls if line.startswith(("python3 -m", "pip", "npm", "  in"))]


VENV_AND_NPM = ["python3 -m venv .venv", "pip install -q --disable-pip-version-check -e .[test]", NPM_CI]


def test_root_without_sudo_runs_apt_get_itself(tmp_path):
    machine = Machine(tmp_path, uid=0, commands=("python3",), packages=(), sudo=False)
    done = machine.run(STUB_NO_ENSUREPIP="1")
    assert done.returncode == 0, done.stderr
    assert machine.apt_calls() == [
        "apt-get update -qq |  frontend=noninteractive sudo=no",
        "apt-get install -y -qq python3-venv redis-server openssl ca-certificates nodejs npm libfaketime"
        " |  frontend=noninteractive sudo=no",
        "apt-get install -y -qq --no-install-recommends prometheus |  frontend=noninteractive sudo=no",
    ]
    assert not any(line.startswith("sudo") for line in machine.calls)
    assert [line for line in after_apt(machine) if not line.startswith("  in")] == VENV_AND_NPM
    assert f"  in {machine.repo}/tests/support/socketio" in machine.calls
    assert "setup: done" in done.stdout


def test_a_sudo_user_runs_apt_get_through_sudo(tmp_path):
    machine = Machine(tmp_path, uid=1000, commands=("python3", "redis-server", "openssl", "node", "npm"),
                      packages=("ca-certificates",))
    done = machine.run()
    assert done.returncode == 0, done.stderr
    assert machine.apt_calls() == [
        "apt-get update -qq |  frontend=noninteractive sudo=yes",
        "apt-get install -y -qq libfaketime |  frontend=noninteractive sudo=yes",
        "apt-get install -y -qq --no-install-recommends prometheus |  frontend=noninteractive sudo=yes",
    ]
    assert [line for line in machine.calls if line.startswith("sudo")] == [
        "sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq",
        "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libfaketime",
        "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus",
    ]
    # The venv and the npm packages belong to the user, not to root.
    assert [line for line in after_apt(machine) if not line.startswith("  in")] == VENV_AND_NPM


@pytest.mark.parametrize("uid", [0, 1000])
def test_everything_present_runs_no_apt_get(tmp_path, uid):
    machine = Machine(tmp_path, uid=uid, sudo=False)
    done = machine.run()
    assert done.returncode == 0, done.stderr
    assert machine.apt_calls() == []
    assert "setup: system packages: all present" in done.stdout
    assert [line for line in after_apt(machine) if not line.startswith("  in")] == VENV_AND_NPM


def test_a_second_run_keeps_the_venv_and_the_npm_packages(tmp_path):
    machine = Machine(tmp_path)
    assert machine.run().returncode == 0
    marker = machine.repo / "tests" / "support" / "socketio" / "node_modules" / ".package-lock.json"
    marker.parent.mkdir()
    marker.write_text("{}\n")
    lock = machine.repo / "tests" / "support" / "socketio" / "package-lock.json"
    os.utime(lock, (marker.stat().st_mtime - 10, marker.stat().st_mtime - 10))
    machine.calls_log.unlink()
    done = machine.run()
    assert done.returncode == 0, done.stderr
    assert after_apt(machine) == ["pip install -q --disable-pip-version-check -e .[test]"]
    assert "setup: npm packages: up to date" in done.stdout


@pytest.mark.parametrize("present", [("python3", "redis-server", "openssl", "promtool", "prometheus"),
                                     ("python3", "redis-server", "openssl", "npm", "promtool", "prometheus")])
def test_node_missing_installs_nodejs_and_npm(tmp_path, present):
    machine = Machine(tmp_path, commands=present)
    done = machine.run()
    assert done.returncode == 0, done.stderr
    assert machine.apt_calls() == [
        "apt-get update -qq |  frontend=noninteractive sudo=no",
        "apt-get install -y -qq nodejs npm |  frontend=noninteractive sudo=no",
    ]


def test_promtool_alone_is_not_enough(tmp_path):
    machine = Machine(tmp_path, commands=("python3", "redis-server", "openssl", "node", "npm", "promtool"))
    assert machine.run().returncode == 0
    assert machine.apt_calls()[1:] == [
        "apt-get install -y -qq --no-install-recommends prometheus |  frontend=noninteractive sudo=no"]


def test_a_failing_apt_get_stops_with_a_clear_message(tmp_path):
    machine = Machine(tmp_path, commands=("python3",))
    done = machine.run(STUB_APT_EXIT="100")
    assert done.returncode != 0
    assert "setup: error: apt-get update -qq failed (exit 100); see its errors above" in done.stderr
    assert len(machine.apt_calls()) == 1  # nothing installed after the failed update
    assert after_apt(machine) == []  # and no venv, no npm


def test_a_failing_install_stops_before_the_venv(tmp_path):
    machine = Machine(tmp_path, commands=("python3",))
    done = machine.run(STUB_APT_INSTALL_EXIT="100")
    assert done.returncode != 0
    assert "setup: error: apt-get install -y -qq redis-server" in done.stderr
    assert "failed (exit 100)" in done.stderr
    assert after_apt(machine) == []


def test_not_root_and_no_sudo_says_what_to_do(tmp_path):
    machine = Machine(tmp_path, uid=1000, commands=("python3", "node", "npm"), sudo=False)
    done = machine.run()
    assert done.returncode != 0
    assert "not root and no sudo" in done.stderr
    assert "redis-server" in done.stderr  # what it needed
    assert machine.apt_calls() == [] and after_apt(machine) == []


def test_no_apt_get_names_what_to_install(tmp_path):
    machine = Machine(tmp_path, commands=("python3", "redis-server", "openssl", "node", "npm"),
                      packages=("ca-certificates",))
    (machine.bin / "apt-get").unlink()
    done = machine.run()
    assert done.returncode != 0
    assert "no apt-get" in done.stderr and "libfaketime" in done.stderr and "prometheus" in done.stderr


def test_a_python_older_than_3_11_is_refused_before_anything_is_installed(tmp_path):
    machine = Machine(tmp_path, commands=("python3",))
    done = machine.run(STUB_PYTHON_TOO_OLD="1")
    assert done.returncode != 0
    assert "reaper needs Python 3.11 or newer; python3 here is Python 3.10.12" in done.stderr
    assert machine.apt_calls() == []


def test_a_failing_npm_ci_is_reported(tmp_path):
    machine = Machine(tmp_path)
    done = machine.run(STUB_NPM_EXIT="1")
    assert done.returncode != 0
    assert "setup: error: npm ci in tests/support/socketio failed" in done.stderr


def test_the_script_is_executable_and_posix_sh():
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/bin/sh\n")
    assert "set -eu" in SCRIPT.read_text()
    checked = subprocess.run(["/bin/sh", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
