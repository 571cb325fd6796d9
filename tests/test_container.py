"""The container files: Dockerfile, requirements.lock, .dockerignore and deploy/docker-compose.yml
(the Kubernetes manifests: test_k8s.py). No Docker engine runs here, so the image is not built:
its layers are read as written, its commands (ENTRYPOINT + CMD, HEALTHCHECK) run against a real
daemon, and every REAPER_* variable the files set goes through load_config."""

import json
import os
import shlex
import signal
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from reaper.core.config import load_config
from support.redis_proc import RedisProcess, find_free_port
from support.standin import wait_for
from support.manifests import load as load_yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's console scripts: `reaper` as the image has it


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    logical, pending = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        instruction, _, args = pending.strip().partition(" ")
        logical.append((instruction.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation line"
    return logical


def instruction(name: str) -> list[str]:
    return [args for instr, args in dockerfile() if instr == name]


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form ENTRYPOINT/CMD/HEALTHCHECK CMD (a shell form fails)."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def image_env() -> dict[str, str]:
    env = {}
    for args in instruction("ENV"):
        for pair in shlex.split(args):
            name, sep, value = pair.partition("=")
            assert sep, f"ENV {pair!r}: use NAME=value"
            env[name] = value
    return env


def entrypoint_command() -> list[str]:
    (entrypoint,), (cmd,) = instruction("ENTRYPOINT"), instruction("CMD")
    return exec_form(entrypoint) + exec_form(cmd)


def healthcheck_command() -> tuple[dict, list[str]]:
    (args,) = instruction("HEALTHCHECK")
    options, _, command = args.partition(" CMD ")
    assert command, f"HEALTHCHECK {args!r}: expected options then CMD [...]"
    return dict(opt.lstrip("-").split("=", 1) for opt in options.split()), exec_form(command)


def reaper_vars(env: dict) -> dict:
    return {k: v for k, v in env.items() if k.startswith("REAPER_")}


# -- the Dockerfile as written --------------------------------------------------------------

def test_the_image_is_slim_python_3_11_and_runs_as_a_numeric_non_root_user():
    steps = dockerfile()
    assert steps[0] == ("FROM", "python:3.11-slim")
    users = [i for i, (instr, _) in enumerate(steps) if instr == "USER"]
    installs = [i for i, (instr, args) in enumerate(steps) if instr == "RUN" and "pip install" in args]
    assert users and installs and users[-1] > installs[-1], "USER must come after the install"
    user = steps[users[-1]][1]
    assert user.isdigit() and int(user) != 0, f"USER {user}: numeric and not root (runAsNonRoot)"
    assert any(f"--uid {user}" in args for instr, args in steps if instr == "RUN")


def copies() -> list[tuple[int, list[str]]]:
    """(step index, sources) of every COPY."""
    return [(i, shlex.split(args)[:-1]) for i, (instr, args) in enumerate(dockerfile()) if instr == "COPY"]


def pip_installs() -> list[tuple[int, list[str]]]:
    """(step index, arguments after `pip install`) of every pip install in a RUN."""
    found = []
    for i, (instr, args) in enumerate(dockerfile()):
        for command in args.split("&&") if instr == "RUN" else []:
            words = shlex.split(command)
            if words[:2] == ["pip", "install"]:
                found.append((i, words[2:]))
    return found


def test_the_image_installs_the_package_from_what_it_copies_and_nothing_else():
    copied = sum((sources for _, sources in copies()), [])
    assert sorted(copied) == ["README.md", "pyproject.toml", "reaper", "requirements.lock"]
    for source in copied:
        assert (ROOT / source).exists(), source
    (deps, package) = [args for _, args in pip_installs()]
    assert deps == ["--no-deps", "-r", "/src/requirements.lock"]
    assert package == ["--no-deps", "/src"]  # resolves nothing: the lock's layer has it all
    assert all("pip check" in args for instr, args in dockerfile() if instr == "RUN" and "pip install" in args)


def test_the_dependencies_are_a_layer_of_their_own_below_the_source():
    """A change to reaper/ (or to pyproject.toml's version) reuses the cached dependency layer."""
    (lock_copy,) = [i for i, sources in copies() if sources == ["requirements.lock"]]
    (source_copy,) = [i for i, sources in copies() if "reaper" in sources]
    (deps_install,) = [i for i, args in pip_installs() if "/src/requirements.lock" in args]
    (package_install,) = [i for i, args in pip_installs() if "/src" in args]
    assert lock_copy < deps_install < source_copy < package_install
    assert not [i for i, _ in copies() if lock_copy < i < deps_install], "nothing else invalidates that layer"


def test_the_entrypoint_is_reaper_run_and_the_healthcheck_is_reaper_health_without_curl():
    assert entrypoint_command() == ["reaper", "run"]
    options, command = healthcheck_command()
    assert command == ["reaper", "health"]
    assert {"interval", "timeout", "retries"} <= set(options)
    instructions = " ".join(args for _, args in dockerfile())
    assert "curl" not in instructions and "wget" not in instructions
    assert (BIN / "reaper").exists(), "the console script the image runs is installed here too"


def test_every_reaper_variable_the_image_sets_is_a_real_config_key():
    env = reaper_vars(image_env())
    assert env["REAPER_SERVER_LISTEN"] == "0.0.0.0:9108"
    config = load_config(None, env)
    assert config.server.listen == "0.0.0.0:9108" and config.log.format == "json"
    assert "9108" in instruction("EXPOSE")


def test_dockerignore_keeps_the_sources_and_drops_the_rest():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for dropped in (".git", ".venv", "tests", "node_modules", "*.toml"):
        assert dropped in patterns
    assert "!pyproject.toml" in patterns
    assert "docs" in patterns
    assert not {"reaper", "README.md", "pyproject.toml", "requirements.lock", "*.lock"} & set(patterns)


# -- the Dockerfile's commands against a real daemon ----------------------------------------

@pytest.fixture
def private_redis(tmp_path):
    """A redis-server this test may stop."""
    server = RedisProcess(tmpdir=tmp_path / "redis")
    server.start()
    yield server
    server.close()


@pytest.fixture
def container_env(private_redis, auth_service, user_service, tmp_path):
    """The image's environment (its ENV lines, none of the machine's REAPER_*), as a container
    would get it with the test's Redis and stand-ins, listening on a free loopback port."""
    (tmp_path / "empty.toml").write_text("")
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("REAPER_", "REDIS_"))}
    return {**inherited, **image_env(), "REAPER_SERVER_LISTEN": f"127.0.0.1:{find_free_port()}",
            "REAPER_CONFIG": str(tmp_path / "empty.toml"), "REAPER_REDIS_URL": private_redis.url,
            "REAPER_AUTH_SERVICE_BASE_URL": auth_service.url, "REAPER_USER_SERVICE_BASE_URL": user_service.url,
            "REAPER_MONGO_URI": "", "REAPER_TIMING_HEARTBEAT_INTERVAL": "200ms",
            "REAPER_STARTUP_PURGE": "off"}


@pytest.fixture
def container(container_env, tmp_path):
    """The image's ENTRYPOINT + CMD, run as written, with the container's environment."""
    log = open(tmp_path / "reaper.log", "wb")
    command = entrypoint_command()
    proc = subprocess.Popen([str(BIN / command[0]), *command[1:]], env=container_env, cwd=tmp_path,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    log.close()


def run_healthcheck(env: dict) -> subprocess.CompletedProcess:
    _, command = healthcheck_command()
    return subprocess.run([str(BIN / command[0]), *command[1:]], env=env, capture_output=True, text=True,
                          timeout=30)


def test_the_healthcheck_says_healthy_while_the_entrypoint_runs_and_unhealthy_when_redis_is_gone(
        container, container_env, private_redis, tmp_path):
    results = []

    def healthcheck_says(code: int) -> bool:
        results.append(run_healthcheck(container_env))
        return results[-1].returncode == code

    assert wait_for(lambda: healthcheck_says(0), timeout=20, interval=0.2), \
        (results[-1:], (tmp_path / "reaper.log").read_text())
    healthy = results[-1].stdout.splitlines()
    assert len(healthy) == 1 and healthy[0].startswith("healthy: http://127.0.0.1:")

    private_redis.stop()
    assert wait_for(lambda: healthcheck_says(1), timeout=20, interval=0.2), results[-1:]
    unhealthy = results[-1].stdout.splitlines()
    assert len(unhealthy) == 1 and unhealthy[0].startswith("unhealthy: ") and "503" in unhealthy[0]
    assert "redis" in unhealthy[0].lower()

    container.send_signal(signal.SIGTERM)
    assert container.wait(20) == 0


def test_the_healthcheck_of_a_container_whose_reaper_is_not_running_fails(container_env):
    result = run_healthcheck(container_env)  # nothing listens on that port
    assert result.returncode == 1
    assert result.stdout.startswith("unhealthy: http://127.0.0.1:") and "ConnectError" in result.stdout


# -- requirements.lock ------------------------------------------------------------------------

def image_python() -> str:
    """The image's Python, "3.11", from the FROM line (python:3.11-slim)."""
    (image,) = instruction("FROM")
    return image.split(":", 1)[1].split("-", 1)[0]


def image_environment(extra: str = "") -> dict:
    """Marker values as in the image: Linux, its Python's newest patch release (as -slim follows)."""
    return {**default_environment(), "sys_platform": "linux", "platform_system": "Linux",
            "python_version": image_python(), "python_full_version": f"{image_python()}.99", "extra": extra}


def read_lock(text: str) -> dict[str, Version]:
    """name -> pinned version; ValueError for a line that pins nothing exactly or a name twice."""
    pins = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        specs = list(requirement.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version or requirement.marker:
            raise ValueError(f"line {number}: {line!r} is not name==version")
        name = canonicalize_name(requirement.name)
        if name in pins:
            raise ValueError(f"line {number}: {requirement.name} pinned twice")
        pins[name] = Version(specs[0].version)
    return pins


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def package_version() -> str:
    """reaper's version, which every image tag in deploy/ pins."""
    return pyproject()["version"]


def runtime_requirements() -> list[Requirement]:
    return [Requirement(r) for r in pyproject()["dependencies"]]


def unmet(requirements: list[Requirement], pins: dict[str, Version]) -> list[str]:
    """What the pins leave unmet: a requirement not pinned, or pinned to a version it refuses."""
    problems = []
    for requirement in requirements:
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is None:
            problems.append(f"{requirement.name}: not in the lock")
        elif not requirement.specifier.contains(pinned, prereleases=True):
            problems.append(f"{requirement.name}: {pinned} does not satisfy {requirement.specifier}")
    return problems


def requirements_of(name: str, extras: set[str]) -> list[Requirement]:
    """What an installed distribution requires in the image, with these extras."""
    found = []
    for line in metadata.requires(name) or []:
        requirement = Requirement(line)
        if requirement.marker is None or any(requirement.marker.evaluate(image_environment(extra))
                                             for extra in extras | {""}):
            found.append(requirement)
    return found


def closure(requirements: list[Requirement]) -> set[str]:
    """The names of every distribution these need, and those need, as installed in this venv."""
    seen, todo = set(), list(requirements)
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if (name, frozenset(requirement.extras)) in seen:
            continue
        seen.add((name, frozenset(requirement.extras)))
        todo += requirements_of(requirement.name, set(requirement.extras))
    return {name for name, _ in seen}


def test_the_lock_pins_every_runtime_dependency_with_a_version_pyproject_accepts():
    pins = read_lock((ROOT / "requirements.lock").read_text())
    direct = runtime_requirements()
    assert len(direct) >= 6 and unmet(direct, pins) == []
    for requirement in direct:  # the extras too: redis[hiredis] needs hiredis
        assert unmet(requirements_of(requirement.name, set(requirement.extras)), pins) == [], requirement
    assert "hiredis" in pins


def test_the_lock_holds_every_dependency_of_a_dependency_and_nothing_of_the_test_extra():
    pins = read_lock((ROOT / "requirements.lock").read_text())
    needed = closure(runtime_requirements())
    assert {"httpx", "httpcore", "h11", "anyio", "idna", "certifi", "dnspython"} <= needed
    assert needed - set(pins) == set()
    test_extra = pyproject()["optional-dependencies"]["test"]
    assert not {canonicalize_name(Requirement(r).name) for r in test_extra} & set(pins)
    assert "reaper" not in pins


@pytest.mark.parametrize("lock, problem", [
    ("redis>=5.0\n", "is not name==version"),
    ("redis==8.*\n", "is not name==version"),
    ("redis==8.2.0\nRedis==8.2.0\n", "pinned twice"),
    ("redis==8.2.0 ; python_version < '3.12'\n", "is not name==version"),
])
def test_a_lock_line_that_pins_nothing_exactly_is_refused(lock, problem):
    with pytest.raises(ValueError, match=problem):
        read_lock(lock)


def test_a_lock_missing_a_dependency_or_pinning_a_refused_version_is_caught():
    pins = read_lock("redis==4.6.0\nhttpx==0.29.0\n")
    assert unmet([Requirement("redis[hiredis]>=5.0"), Requirement("httpx>=0.27"), Requirement("click>=8.1")],
                 pins) == ["redis: 4.6.0 does not satisfy >=5.0", "click: not in the lock"]


# -- docker compose -----------------------------------------------------------------------------

def yaml_file(relative: str):
    return load_yaml((ROOT / relative).read_text())


def compose_default(value: str) -> str:
    """docker compose's ${VAR:-default}, as it reads without VAR set."""
    if value.startswith("${") and value.endswith("}") and ":-" in value:
        return value[2:-1].split(":-", 1)[1]
    return value


def assert_real_config(env: dict) -> None:
    """Every REAPER_* is a real key with a valid value (load_config raises otherwise)."""
    reaper_only = {k: v for k, v in env.items() if k.startswith("REAPER_") and v is not None}
    assert reaper_only, "no REAPER_* variable at all"
    signaling = {k: v for k, v in env.items() if k in ("REDIS_HOST", "REDIS_PORT") and v is not None}
    load_config(None, {**reaper_only, **signaling})


def test_compose_runs_reaper_beside_the_signaling_redis_with_env_config_and_the_healthcheck():
    services = yaml_file("deploy/docker-compose.yml")["services"]
    assert set(services) == {"redis", "reaper"}
    reaper = services["reaper"]
    env = {k: compose_default(str(v)) for k, v in reaper["environment"].items()}
    assert env["REDIS_HOST"] == "redis"
    assert_real_config(env)
    config = load_config(None, {k: v for k, v in env.items() if k.startswith("REAPER_")})
    assert config.server.listen == "0.0.0.0:9108"
    assert reaper["healthcheck"]["test"] == ["CMD", *healthcheck_command()[1]]
    assert reaper["depends_on"]["redis"]["condition"] == "service_healthy"
    assert (ROOT / "deploy" / reaper["build"] / "Dockerfile").is_file()
    assert "noeviction" in services["redis"]["command"]
    assert reaper["image"] == f"reaper:{package_version()}"
    assert reaper["read_only"] is True and reaper["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in reaper["security_opt"]
