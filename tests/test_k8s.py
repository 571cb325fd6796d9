"""The Kubernetes manifests of deploy/k8s: every document valid against the Kubernetes schemas
(offline, those kubernetes-validate ships), pods the "restricted" Pod Security Standard admits,
probes that never restart reaper for a Redis outage nor gate the signaling pod, a ConfigMap and
environment that load_config accepts, secrets only from the Secret, the image tag pinned."""

import copy
import dataclasses
import tomllib
from pathlib import Path
from urllib.parse import unquote, urlsplit

import click
import kubernetes_validate
import pytest

from reaper.app.cli import run as run_command
from reaper.core.config import Config, load_config
from reaper.ops.monitor import Monitor
from support.manifests import load, load_file
from test_container import entrypoint_command, image_env, instruction, package_version

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes the manifests are for (podFailurePolicy, unhealthyPodEvictionPolicy), and
# the newest whose schemas kubernetes-validate ships.
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
KINDS = {
    "configmap.yaml": ["ConfigMap"],
    "secret.example.yaml": ["Secret"],
    "deployment.yaml": ["Deployment", "PodDisruptionBudget", "Service"],
    "sidecar.yaml": ["Deployment"],
    "cronjob.yaml": ["CronJob"],
}
WORKLOADS = ("deployment.yaml", "sidecar.yaml", "cronjob.yaml")
# The environment variables that carry a secret, and a value of each that load_config accepts.
SECRET_VARS = {"REDIS_PASSWORD": "p@ss word", "REAPER_AUTH_SERVICE_TOKEN": "auth-token",
               "REAPER_USER_SERVICE_TOKEN": "user-token",
               "REAPER_MONGO_URI": "mongodb://reaper:s3cret@mongo:27017/?replicaSet=rs0"}


def documents(name: str) -> list[dict]:
    return load_file(K8S / name)


def the(name: str, kind: str) -> dict:
    (doc,) = [d for d in documents(name) if d["kind"] == kind]
    return doc


def pod_spec(doc: dict) -> dict:
    template = doc["spec"]["jobTemplate"]["spec"]["template"] if doc["kind"] == "CronJob" else doc["spec"]["template"]
    return template["spec"]


def workload(name: str) -> dict:
    return the(name, "CronJob" if name == "cronjob.yaml" else "Deployment")


def reaper_container(name: str) -> dict:
    (reaper,) = [c for c in pod_spec(workload(name))["containers"] if c["name"] == "reaper"]
    return reaper


def env_of(container: dict) -> dict[str, dict]:
    """name -> the env item (value or valueFrom); a name given twice fails."""
    items = container.get("env", [])
    names = [item["name"] for item in items]
    assert len(names) == len(set(names)), f"{container['name']}: an env variable given twice"
    return {item["name"]: item for item in items}


def configmap_toml() -> str:
    return the("configmap.yaml", "ConfigMap")["data"]["reaper.toml"]


def effective_config(name: str, tmp_path: Path) -> Config:
    """reaper's configuration in that pod: the image's ENV, then the container's env with the
    ConfigMap mounted where REAPER_CONFIG points (a file here) and stand-in secret values."""
    env = {}
    for var, item in env_of(reaper_container(name)).items():
        env[var] = SECRET_VARS[var] if "valueFrom" in item else item["value"]
    mounted = tmp_path / "reaper.toml"
    mounted.write_text(configmap_toml())
    assert env["REAPER_CONFIG"] == str(config_mount(name) / "reaper.toml")
    return load_config(None, {**image_env(), **env, "REAPER_CONFIG": str(mounted)})


def config_mount(name: str) -> Path:
    """Where the pod mounts the ConfigMap "reaper" with its key reaper.toml."""
    spec = pod_spec(workload(name))
    (volume,) = [v for v in spec["volumes"] if v.get("configMap", {}).get("name") == "reaper"]
    assert {"key": "reaper.toml", "path": "reaper.toml"} in volume["configMap"]["items"]
    (mount,) = [m for m in reaper_container(name)["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True and "subPath" not in mount  # a subPath mount never sees an update
    return Path(mount["mountPath"])


# -- the schemas ---------------------------------------------------------------------------------

def test_the_manifests_are_these_files_and_documents():
    assert sorted(p.name for p in K8S.iterdir()) == sorted(KINDS)
    for name, kinds in KINDS.items():
        assert [d["kind"] for d in documents(name)] == kinds, name


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_document_validates_against_the_kubernetes_schemas(name, version):
    for doc in documents(name):
        # strict: an unknown field (a misspelt one) is an error, as kubectl's field validation says
        assert kubernetes_validate.validate(doc, version, strict=True) == version.rsplit(".", 1)[0]


@pytest.mark.parametrize("change, message", [
    (lambda d: d["spec"]["template"]["spec"]["containers"][0].update(securityContex={}), "securityContex"),
    (lambda d: d["spec"].update(replicas="two"), "'two' is not of type"),
    (lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"), "'name' is a required property"),
])
def test_the_schema_check_catches_a_misspelt_field_a_wrong_type_and_a_missing_one(change, message):
    broken = copy.deepcopy(workload("deployment.yaml"))
    change(broken)
    with pytest.raises(kubernetes_validate.ValidationError, match=message):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)


def test_the_yaml_reader_refuses_a_key_given_twice():
    with pytest.raises(Exception, match="duplicate key 'image'"):
        load("containers:\n  - name: reaper\n    image: a\n    image: b\n")


# -- the "restricted" Pod Security Standard ----------------------------------------------------

ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                   "projected", "secret"}
SECCOMP_OK = {"RuntimeDefault", "Localhost"}


def restricted_violations(spec: dict) -> list[str]:
    """What the "restricted" Pod Security Standard (with the baseline it includes) refuses in a
    pod spec, for the fields these manifests could set."""
    found = [f"{field}: true" for field in ("hostNetwork", "hostPID", "hostIPC") if spec.get(field)]
    found += [f"volume {v['name']}: {kind}" for v in spec.get("volumes", [])
              for kind in set(v) - {"name"} - ALLOWED_VOLUMES]
    pod = spec.get("securityContext", {})
    if pod.get("runAsUser") == 0:
        found.append("pod: runAsUser 0")
    containers = [*spec.get("initContainers", []), *spec["containers"]]
    for c in containers:
        sc, name = c.get("securityContext", {}), c["name"]
        if sc.get("privileged"):
            found.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            found.append(f"{name}: capabilities do not drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: capabilities add {sorted(set(caps['add']) - {'NET_BIND_SERVICE'})}")
        if sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
            found.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser") == 0:
            found.append(f"{name}: runAsUser 0")
        seccomp = sc.get("seccompProfile", pod.get("seccompProfile", {})).get("type")
        if seccomp not in SECCOMP_OK:
            found.append(f"{name}: seccompProfile {seccomp}")
        if any("hostPort" in p for p in c.get("ports", [])):
            found.append(f"{name}: hostPort")
    return found


@pytest.mark.parametrize("name", WORKLOADS)
def test_every_pod_is_one_a_restricted_namespace_admits(name):
    spec = pod_spec(workload(name))
    assert restricted_violations(spec) == []
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize("change, violation", [
    (lambda s: (s["securityContext"].pop("seccompProfile"), s["containers"][0]["securityContext"].pop("seccompProfile")),
     "seccompProfile None"),
    (lambda s: s["containers"][0]["securityContext"].update(seccompProfile={"type": "Unconfined"}),
     "seccompProfile Unconfined"),
    (lambda s: s["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"), "allowPrivilegeEscalation"),
    (lambda s: s["containers"][0]["securityContext"].update(capabilities={"add": ["SYS_ADMIN"]}), "drop ALL"),
    (lambda s: s["containers"][0]["securityContext"]["capabilities"].update(add=["NET_RAW"]), "add ['NET_RAW']"),
    (lambda s: s["containers"][0]["securityContext"].update(privileged=True), "privileged"),
    (lambda s: (s["securityContext"].pop("runAsNonRoot"), s["containers"][0]["securityContext"].pop("runAsNonRoot")),
     "runAsNonRoot"),
    (lambda s: s["containers"][0]["securityContext"].update(runAsUser=0), "runAsUser 0"),
    (lambda s: s.update(hostNetwork=True), "hostNetwork"),
    (lambda s: s["volumes"].append({"name": "host", "hostPath": {"path": "/"}}), "hostPath"),
    (lambda s: s["containers"][0]["ports"][0].update(hostPort=9108), "hostPort"),
])
def test_the_restricted_checker_finds_what_such_a_namespace_refuses(change, violation):
    spec = copy.deepcopy(pod_spec(workload("deployment.yaml")))
    change(spec)
    assert any(violation in v for v in restricted_violations(spec)), restricted_violations(spec)


@pytest.mark.parametrize("name", WORKLOADS)
def test_every_reaper_container_is_locked_down_as_the_image_user(name):
    assert reaper_container(name)["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": int(instruction("USER")[-1]),
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# -- probes --------------------------------------------------------------------------------------

def probe_path(container: dict, probe: str) -> str:
    http = container[probe]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert http["port"] in ports, f"{probe} asks a port the container does not name"
    return http["path"]


def test_the_sidecar_never_gates_the_signaling_pods_readiness():
    reaper = reaper_container("sidecar.yaml")
    assert "readinessProbe" not in reaper  # a pod is ready only when all its containers are
    assert "startupProbe" not in reaper  # nor holds liveness back behind /readyz
    assert probe_path(reaper, "livenessProbe") == "/livez"
    signaling = [c for c in pod_spec(workload("sidecar.yaml"))["containers"] if c["name"] != "reaper"]
    assert [c["name"] for c in signaling] == ["signaling"]


@pytest.mark.parametrize("name", ["deployment.yaml", "sidecar.yaml"])
def test_liveness_asks_livez_which_a_redis_outage_does_not_fail(name):
    reaper = reaper_container(name)
    path = probe_path(reaper, "livenessProbe")
    assert path == "/livez" and path in Monitor(load_config(None, {})).routes()
    # a few misses in a row, not one: a probe is not the only thing the node runs
    assert reaper["livenessProbe"]["failureThreshold"] >= 3
    assert "/healthz" not in {probe_path(reaper, p) for p in ("livenessProbe", "readinessProbe", "startupProbe")
                              if p in reaper}


def test_the_deployment_is_two_replicas_ready_on_readyz_rolled_one_at_a_time():
    deployment = workload("deployment.yaml")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert probe_path(reaper_container("deployment.yaml"), "readinessProbe") == "/readyz"
    assert "/readyz" in Monitor(load_config(None, {})).routes()
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    budget = the("deployment.yaml", "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("name", ["deployment.yaml", "sidecar.yaml"])
def test_metrics_are_scraped_on_the_port_reaper_listens_on(name, tmp_path):
    listen_port = int(effective_config(name, tmp_path).server.listen.rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in reaper_container(name)["ports"]}
    assert ports == {"metrics": listen_port}
    annotations = workload(name)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(listen_port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_the_metrics_service_is_headless_and_reaches_the_deployments_pods():
    service = the("deployment.yaml", "Service")
    labels = workload("deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["clusterIP"] == "None"  # each replica scraped, not one at random
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["name"] == "metrics" and port["targetPort"] == "metrics"


# -- configuration -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", WORKLOADS)
def test_every_variable_and_every_configmap_key_is_a_real_config_key(name, tmp_path):
    config = effective_config(name, tmp_path)  # load_config refuses an unknown key or a bad value
    assert config.source == str(tmp_path / "reaper.toml")
    assert urlsplit(config.redis.url).hostname == "redis"
    assert unquote(urlsplit(config.redis.url).password) == SECRET_VARS["REDIS_PASSWORD"]
    assert config.auth_service.token == "auth-token" and config.user_service.token == "user-token"
    assert config.mongo.uri == SECRET_VARS["REAPER_MONGO_URI"]
    assert config.log.format == "json" and config.startup.purge == "cold"
    assert config.server.listen == ("" if name == "cronjob.yaml" else "0.0.0.0:9108")


def test_the_sidecar_reads_the_redis_the_signaling_server_beside_it_writes_to(tmp_path):
    url = urlsplit(effective_config("sidecar.yaml", tmp_path).redis.url)
    (signaling,) = [c for c in pod_spec(workload("sidecar.yaml"))["containers"] if c["name"] == "signaling"]
    env = env_of(signaling)
    assert (url.hostname, str(url.port)) == (env["REDIS_HOST"]["value"], env["REDIS_PORT"]["value"])


@pytest.mark.parametrize("name", ["deployment.yaml", "sidecar.yaml"])
def test_the_daemons_run_reaper_run(name):
    assert [*entrypoint_command()[:1], *reaper_container(name)["args"]] == ["reaper", "run"]


def test_the_configmap_toml_itself_loads_and_is_refused_with_a_misspelt_key(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(configmap_toml())
    assert load_config(good, {}).timing.heartbeat_interval_s == 30
    bad = tmp_path / "bad.toml"
    bad.write_text(configmap_toml().replace("heartbeat_interval", "heartbeat_intervl"))
    with pytest.raises(Exception, match="timing.heartbeat_intervl"):
        load_config(bad, {})


def toml_env_names() -> set[str]:
    """REAPER_<SECTION>_<KEY> of every key the ConfigMap's TOML sets."""
    table = tomllib.loads(configmap_toml())
    return {f"REAPER_{section}_{key}".upper() for section, keys in table.items() for key in keys}


@pytest.mark.parametrize("name", WORKLOADS)
def test_no_configmap_key_is_overridden_by_an_environment_variable(name):
    """A variable wins over the file: a key set in both would make the ConfigMap's value a lie."""
    shadowing = toml_env_names() & (set(image_env()) | set(env_of(reaper_container(name))))
    assert shadowing == set()


# -- secrets -------------------------------------------------------------------------------------

def secret_config_keys() -> set[str]:
    """section.key of every config key that holds (or may hold) a secret."""
    return {f"{section.name}.{f.name}" for section in dataclasses.fields(Config) if section.name != "source"
            for f in dataclasses.fields(getattr(Config(), section.name))
            if f.metadata.get("secret")}


def test_the_configmap_holds_no_secret():
    table = tomllib.loads(configmap_toml())
    assert {"redis.url", "auth_service.token", "user_service.token", "mongo.uri"} <= secret_config_keys()
    for dotted in secret_config_keys():
        section, key = dotted.split(".")
        value = table.get(section, {}).get(key)
        if dotted == "redis.url":  # its host is configuration, its password is not
            assert value and urlsplit(value).password is None and urlsplit(value).username is None
        else:
            assert value is None, dotted


@pytest.mark.parametrize("name", WORKLOADS)
def test_every_secret_comes_from_the_secret_by_reference(name):
    env = env_of(reaper_container(name))
    secret = the("secret.example.yaml", "Secret")
    assert set(SECRET_VARS) <= set(env)
    secret_vars = set(SECRET_VARS) | {f"REAPER_{k.replace('.', '_')}".upper() for k in secret_config_keys()}
    for var, item in env.items():
        if var in secret_vars:
            assert "value" not in item, f"{var} written into the manifest"
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"], var
        else:
            assert "valueFrom" not in item, var
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"].get("optional") is not True
    assert env["REAPER_AUTH_SERVICE_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_the_example_secret_holds_no_value_and_every_key_is_used():
    secret = the("secret.example.yaml", "Secret")
    assert set(secret) == {"apiVersion", "kind", "metadata", "type", "stringData"}  # no base64 data
    assert set(secret["stringData"].values()) == {""}
    used = {item["valueFrom"]["secretKeyRef"]["key"] for name in WORKLOADS
            for item in env_of(reaper_container(name)).values() if "valueFrom" in item}
    assert used == set(secret["stringData"])


# -- the image -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", WORKLOADS)
def test_the_image_tag_is_pinned_to_the_package_version(name):
    reaper = reaper_container(name)
    assert reaper["image"] == f"reaper:{package_version()}"
    assert reaper["imagePullPolicy"] == "IfNotPresent"
    for container in pod_spec(workload(name))["containers"]:
        assert not container["image"].endswith(":latest") and ":" in container["image"]


@pytest.mark.parametrize("name", WORKLOADS)
def test_resources_are_requested_and_memory_limited(name):
    resources = reaper_container(name)["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert {"cpu", "memory"} <= set(resources["limits"])


# -- the CronJob ---------------------------------------------------------------------------------

def test_the_cronjob_runs_once_a_minute_never_two_at_a_time_and_pending_is_no_failure():
    cronjob = workload("cronjob.yaml")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    reaper = reaper_container("cronjob.yaml")
    assert reaper["args"] == ["run", "--once", "--pending-ok"]
    assert entrypoint_command()[0] == "reaper"
    assert "livenessProbe" not in reaper and "readinessProbe" not in reaper  # nothing listens


def test_every_option_the_cronjob_passes_is_one_reaper_run_has():
    options = {opt for param in run_command.params if isinstance(param, click.Option) for opt in param.opts}
    passed = [arg for arg in reaper_container("cronjob.yaml")["args"][1:] if arg.startswith("--")]
    assert passed and set(passed) <= options, set(passed) - options


def job_outcome(job: dict, exit_code: int, disrupted: bool = False) -> str:
    """What the Job controller does with a pod that ended so: the first podFailurePolicy rule
    that matches (FailJob, Ignore, Count), else Count (against backoffLimit)."""
    for rule in job["podFailurePolicy"]["rules"]:
        codes = rule.get("onExitCodes")
        if codes and codes["operator"] == "In" and exit_code in codes["values"]:
            return rule["action"]
        if codes and codes["operator"] == "NotIn" and exit_code not in codes["values"]:
            return rule["action"]
        if disrupted and any(c["type"] == "DisruptionTarget" and c["status"] == "True"
                             for c in rule.get("onPodConditions", [])):
            return rule["action"]
    return "Count"


def test_a_config_error_fails_the_job_at_once_and_redis_unreachable_is_tried_again():
    job = workload("cronjob.yaml")["spec"]["jobTemplate"]["spec"]
    assert pod_spec(workload("cronjob.yaml"))["restartPolicy"] == "Never"  # podFailurePolicy needs it
    assert job_outcome(job, 2) == "FailJob"  # usage or configuration: trying again cannot help
    assert job_outcome(job, 3) == "Count" and job["backoffLimit"] >= 1  # Redis unreachable: again
    assert job_outcome(job, 1) == "Count"
    assert job_outcome(job, 137, disrupted=True) == "Ignore"  # evicted: no failure of reaper's
    for rule in job["podFailurePolicy"]["rules"]:
        assert rule.get("onExitCodes", {}).get("containerName", "reaper") == "reaper"
