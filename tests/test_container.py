"""The container files: Dockerfile, .dockerignore, deploy/docker-compose.yml and the Kubernetes
examples. No Docker engine runs here, so the image is not built: its commands (ENTRYPOINT + CMD,
HEALTHCHECK) are run as they are written against a real daemon, and every REAPER_* variable the
files set goes through load_config."""

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from reaper.config import load_config
from support.redis_proc import RedisProcess, find_free_port
from support.standin import wait_for
from support.yaml_subset import YamlSubsetError, load as load_yaml

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


def test_the_image_installs_the_package_from_what_it_copies_and_nothing_else():
    copied = [shlex.split(args)[:-1] for args in instruction("COPY")]
    assert sorted(sum(copied, [])) == ["README.md", "pyproject.toml", "reaper"]
    for source in sum(copied, []):
        assert (ROOT / source).exists(), source
    (install,) = [args for args in instruction("RUN") if "pip install" in args]
    assert "pip install /src" in install


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
    assert not {"reaper", "README.md", "pyproject.toml"} & set(patterns)


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


# -- docker compose and Kubernetes -----------------------------------------------------------

def yaml_file(relative: str):
    return load_yaml((ROOT / relative).read_text())


def container_env_vars(container: dict) -> dict:
    """name -> value of a Kubernetes container's env (secret references as None)."""
    found = {}
    for item in container.get("env", []):
        assert set(item) <= {"name", "value", "valueFrom"}, item
        found[item["name"]] = item.get("value")
    return found


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


def test_the_kubernetes_sidecar_probes_healthz_and_readyz_on_the_port_reaper_listens_on():
    deployment = yaml_file("deploy/k8s/sidecar.yaml")
    assert deployment["kind"] == "Deployment"
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert set(containers) == {"signaling", "reaper"}
    reaper = containers["reaper"]
    env = container_env_vars(reaper)
    assert_real_config(env)
    listen_port = int(env["REAPER_SERVER_LISTEN"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in reaper["ports"]}
    assert reaper["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert reaper["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert ports["metrics"] == listen_port
    assert reaper["args"] == ["run"]
    assert reaper["securityContext"]["runAsNonRoot"] is True
    assert str(reaper["securityContext"]["runAsUser"]) == instruction("USER")[-1]
    # the sidecar reads the same Redis as the signaling server it sits beside
    signaling = container_env_vars(containers["signaling"])
    assert (env["REDIS_HOST"], env["REDIS_PORT"]) == (signaling["REDIS_HOST"], signaling["REDIS_PORT"])


def test_the_kubernetes_cronjob_runs_reaper_run_once_never_two_at_a_time():
    cronjob = yaml_file("deploy/k8s/cronjob.yaml")
    assert cronjob["kind"] == "CronJob"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    (reaper,) = pod["containers"]
    assert [*exec_form(instruction("ENTRYPOINT")[0]), *reaper["args"]] == ["reaper", "run", "--once"]
    env = container_env_vars(reaper)
    assert_real_config(env)
    assert load_config(None, {k: v for k, v in env.items() if k.startswith("REAPER_")}).server.listen == ""


@pytest.mark.parametrize("text, problem", [
    ("a:\n\tb: 1\n", "a tab"),
    ("a: &x 1\nb: *x\n", "outside the subset"),
    ("a:\n  - 1\n   - 2\n", "unexpected indentation"),
    ("a: 1\na: 2\n", "duplicate key"),
    ("a:\n", "has no value"),
    ("a: [1, 2\n", "not a JSON-style flow value"),
])
def test_the_yaml_reader_refuses_what_it_does_not_understand(text, problem):
    with pytest.raises(YamlSubsetError) as error:
        load_yaml(text)
    assert problem is None or problem in str(error.value)
