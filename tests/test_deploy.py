"""The deployments start: the container image, Kubernetes and docker-compose (``deploy/``).

No cluster and no Docker engine run here, so each is checked as far as it can be without one:

- Kubernetes: each overlay rendered by ``kubectl kustomize``, every object validated against the
  API's schemas (kubernetes-validate, unknown fields refused), then what a platform team relies
  on: probes, security context, mounts, selectors, settings that exist, Secrets that are either
  rendered or listed in ``deploy/README.md`` for the operator to make;
- docker-compose.yml: validated against the Compose Specification's schema (vendored in
  ``tests/schemas``), its Prometheus configuration checked by ``promtool``, and ``gateway
  serve`` started with the gateway service's environment (the image's and the file's) against
  the test broker and Redis, directories laid out like its volumes, then stopped by SIGTERM;
- the Dockerfile: read, not built (what it copies exists and is not ignored, it runs as a
  numeric non-root user that owns the state directory, its entry point is the real command).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
import tomllib
import types
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any, Union, get_args, get_origin

import httpx
import jsonschema_rs
import kubernetes_validate.utils as kubernetes_schemas  # type: ignore[import-untyped]
import pytest
import yaml
from pydantic import BaseModel

from gateway.adapters.kafka.embedded import free_port
from gateway.adapters.stores.state_dir import SECRET_FILES
from gateway.cli import main
from gateway.settings import Settings
from tests.processes import Processes
from tests.redis_server import RedisServer

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
KUSTOMIZE = DEPLOY / "kubernetes"
OVERLAYS = ("production", "dev")
COMPOSE = REPO / "docker-compose.yml"
PROMETHEUS = DEPLOY / "prometheus"
#: The oldest Kubernetes the manifests are for (git-sync runs as a native sidecar, on by
#: default since 1.29) and the newest whose schemas kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.29", kubernetes_schemas.latest_version())
SECRETS_NAME = "exchange-gateway-secrets"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


# -- what the settings are called --------------------------------------------------------------


def setting_names(model: type[BaseModel] = Settings, prefix: str = "GATEWAY_") -> set[str]:
    """Every environment variable ``model`` reads: its fields, and the fields of nested models
    joined with ``__`` (not the items of lists or dicts, which are set whole, as JSON)."""
    names = set()
    for name, info in model.model_fields.items():
        env = f"{prefix}{name.upper()}"
        names.add(env)
        annotation = info.annotation
        union = get_origin(annotation) in (Union, types.UnionType)
        for candidate in get_args(annotation) if union else (annotation,):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                names |= setting_names(candidate, f"{env}__")
    return names


SETTINGS = setting_names()


def test_setting_names_follow_nesting() -> None:
    assert {"GATEWAY_PORT", "GATEWAY_KAFKA__SASL_PASSWORD", "GATEWAY_REDIS__URL"} <= SETTINGS
    assert "GATEWAY_QUOTAS__DEFAULTS__CONCURRENT_STREAMS" in SETTINGS
    assert "GATEWAY_CLIENTS" in SETTINGS
    assert not {"GATEWAY_KAFKA__NOPE", "GATEWAY_CLIENTS__CLIENT_ID"} & SETTINGS


def unknown_settings(names: Any) -> list[str]:
    return sorted(n for n in names if n.startswith("GATEWAY_") and n not in SETTINGS)


# -- the Dockerfile ----------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def one(self, keyword: str) -> str:
        found = self.all(keyword)
        assert len(found) == 1, f"{keyword}: {len(found)} in the stage FROM {self.base}"
        return found[0]

    def env(self) -> dict[str, str]:
        pairs = [p for args in self.all("ENV") for p in shlex.split(args)]
        return dict(p.split("=", 1) for p in pairs)


def dockerfile_stages(path: Path = DEPLOY / "Dockerfile") -> list[Stage]:
    """The stages of a Dockerfile, each with its instructions (continuations joined, comments
    dropped), as (KEYWORD, arguments)."""
    logical, current = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            logical.append(current.strip())
        current = ""
    stages: list[Stage] = []
    for instruction in logical:
        keyword, _, args = instruction.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            base, *alias = args.split()
            stages.append(Stage(base, alias[1] if alias else None))
        else:
            stages[-1].instructions.append((keyword, args))
    return stages


IMAGE = dockerfile_stages()[-1]
IMAGE_ENV = IMAGE.env()


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not the exec (JSON) form: {args}"
    return [str(v) for v in value]


def image_healthcheck() -> list[str]:
    """The command of the image's HEALTHCHECK (after its options)."""
    options, _, command = IMAGE.one("HEALTHCHECK").partition(" CMD ")
    assert all(o.startswith("--") for o in options.split()), options
    return exec_form(command)


def owned_directories(stage: Stage, uid: str) -> dict[str, int]:
    """Directories the stage's RUN instructions create owned by ``uid`` (``install -d -o``),
    with their mode: a fresh named volume mounted on one takes both."""
    owned: dict[str, int] = {}
    for run in stage.all("RUN"):
        for command in re.split(r"&&|;", run):
            words = shlex.split(command)
            if words[:2] != ["install", "-d"]:
                continue
            options, paths = {}, []
            rest = iter(words[2:])
            for word in rest:
                if word in ("-o", "-g", "-m"):
                    options[word] = next(rest)
                else:
                    paths.append(word)
            if options.get("-o") == uid:
                owned |= dict.fromkeys(paths, int(options.get("-m", "755"), 8))
    return owned


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerfile_builds_a_venv_and_copies_only_what_exists() -> None:
    builder, *_, runtime = dockerfile_stages()
    assert builder.name
    assert builder is not runtime
    # The venv's python links to the base image's: both stages must share it.
    assert builder.base == runtime.base
    assert runtime.base.startswith("python:3.11-slim"), runtime.base
    assert PROJECT["requires-python"] == ">=3.11", "the image's Python no longer matches it"
    ignored = dockerignore_patterns()
    for stage in (builder, runtime):
        for copy in stage.all("COPY"):
            *sources, _ = [w for w in shlex.split(copy) if not w.startswith("--chown")]
            if sources[0].startswith("--from="):
                assert sources[0] == f"--from={builder.name}", copy
                continue
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: no such file in the context"
                hits = [p for p in ignored if fnmatch(source, p.removeprefix("**/"))]
                assert not hits, f"COPY {source}: excluded by .dockerignore {hits}"
    assert any('".[server]"' in run for run in builder.all("RUN"))
    assert "server" in PROJECT["optional-dependencies"]
    for needed in (".venv", ".git", "tests", "state", ".demo", "**/*.private.jwks.json"):
        assert needed in ignored, f".dockerignore lets {needed} into the build context"


def test_image_runs_the_gateway_as_a_numeric_non_root_user() -> None:
    user = IMAGE.one("USER")
    uid = user.split(":")[0]
    assert uid.isdigit(), f"USER {user}: Kubernetes' runAsNonRoot needs a numeric uid"
    assert int(uid) != 0
    assert exec_form(IMAGE.one("ENTRYPOINT")) == ["gateway"]
    assert PROJECT["scripts"]["gateway"] == "gateway.__main__:run"
    command = exec_form(IMAGE.one("CMD"))
    assert command[0] in main.commands, command
    assert IMAGE.one("STOPSIGNAL") == "SIGTERM"
    assert "/livez" in " ".join(image_healthcheck())  # run in the start-up test below
    # A read-only root filesystem: nothing compiled at run time; the state and secrets
    # directories exist owned by the user, so fresh named volumes take that ownership.
    assert IMAGE_ENV["PYTHONDONTWRITEBYTECODE"] == "1"
    owned = owned_directories(IMAGE, uid)
    assert {IMAGE_ENV["GATEWAY_STATE_DIR"], IMAGE_ENV["GATEWAY_SECRETS_DIR"]} <= owned.keys()
    assert IMAGE.one("WORKDIR") in owned, "relative writes would land on the read-only root"
    exposed = set(IMAGE.one("EXPOSE").split())
    assert {IMAGE_ENV["GATEWAY_PORT"], IMAGE_ENV["GATEWAY_METRICS_PORT"]} <= exposed


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings the gateway builds with exactly the ``GATEWAY_`` variables of ``env``."""
    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("GATEWAY_"):
            monkeypatch.setenv(name, value)
    return Settings()


def test_image_environment_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not unknown_settings(IMAGE_ENV)
    settings = settings_from(IMAGE_ENV, monkeypatch)
    assert (settings.host, settings.port, settings.metrics_port) == ("0.0.0.0", 8080, 9100)
    assert settings.log_format == "json"
    assert settings.secrets_dir == Path("/etc/gateway/secrets")
    assert settings.state_dir == Path("/var/lib/gateway")


# -- Kubernetes --------------------------------------------------------------------------------


def kubectl() -> str:
    found = shutil.which("kubectl")
    assert found, (
        "kubectl is not installed: `make test` installs it (Debian's kubernetes-client); "
        "it renders the kustomizations in deploy/kubernetes"
    )
    return found


@dataclass
class Rendered:
    overlay: str
    objects: list[dict[str, Any]]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.of(kind)
        assert len(found) == 1, f"{self.overlay}: {len(found)} {kind} objects"
        return found[0]

    @property
    def pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.one("Deployment")["spec"]["template"]["spec"]
        return spec

    @property
    def pod_labels(self) -> dict[str, str]:
        labels: dict[str, str] = self.one("Deployment")["spec"]["template"]["metadata"]["labels"]
        return labels

    @property
    def gateway(self) -> dict[str, Any]:
        return next(c for c in self.pod["containers"] if c["name"] == "gateway")

    def containers(self) -> list[dict[str, Any]]:
        return [*self.pod.get("initContainers", []), *self.pod["containers"]]

    def env(self) -> dict[str, str | None]:
        """The gateway's environment: the image's, then the manifest's (None: from a Secret)."""
        own = {e["name"]: e.get("value") for e in self.gateway.get("env", [])}
        return {**IMAGE_ENV, **own}

    def volume(self, name: str) -> dict[str, Any]:
        return next(v for v in self.pod["volumes"] if v["name"] == name)

    def mount_of(self, path: str) -> tuple[dict[str, Any], PurePosixPath]:
        """The gateway's mount holding ``path``, and ``path`` relative to it."""
        target = PurePosixPath(path)
        mounts = [m for m in self.gateway["volumeMounts"] if target.is_relative_to(m["mountPath"])]
        assert mounts, f"{self.overlay}: {path} is on no volume (a read-only root filesystem)"
        mount = max(mounts, key=lambda m: len(m["mountPath"]))
        return mount, target.relative_to(mount["mountPath"])


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    overlay = str(request.param)
    done = subprocess.run(
        [kubectl(), "kustomize", str(KUSTOMIZE / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize overlays/{overlay}:\n{done.stderr}"
    objects = [o for o in yaml.safe_load_all(done.stdout) if o]
    return Rendered(overlay, objects)


def test_every_object_is_valid_for_the_kubernetes_api(rendered: Rendered) -> None:
    kinds = {o["kind"] for o in rendered.objects}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= kinds
    assert {"NetworkPolicy", "PersistentVolumeClaim", "ServiceAccount"} <= kinds
    for obj in rendered.objects:
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_schemas.validate(obj, version, strict=True)
            except kubernetes_schemas.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                name = f"{obj['kind']}/{obj['metadata']['name']}"
                pytest.fail(f"{rendered.overlay}: {name} at {where} ({version}): {exc.message}")
    assert {o["metadata"].get("namespace") for o in rendered.objects} == {
        f"exchange-gateway{'' if rendered.overlay == 'production' else '-dev'}"
    }


def test_probes_tell_alive_from_ready(rendered: Rendered) -> None:
    gateway = rendered.gateway
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert ports == {
        "http": int(IMAGE_ENV["GATEWAY_PORT"]),
        "metrics": int(IMAGE_ENV["GATEWAY_METRICS_PORT"]),
    }
    probes = {kind: gateway[f"{kind}Probe"]["httpGet"] for kind in ("startup", "liveness")}
    probes["readiness"] = gateway["readinessProbe"]["httpGet"]
    assert {k: (p["path"], p["port"]) for k, p in probes.items()} == {
        "startup": ("/livez", "http"),
        "liveness": ("/livez", "http"),
        "readiness": ("/readyz", "http"),
    }
    # The gateway waits up to GATEWAY_STARTUP_WAIT_SECONDS for the ledger before it listens.
    startup = gateway["startupProbe"]
    wait = Settings.model_fields["startup_wait_seconds"].default
    assert startup["periodSeconds"] * startup["failureThreshold"] > wait
    # The endpoint is removed before SIGTERM, and the shutdown fits in the grace period.
    pause = gateway["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    assert rendered.pod["terminationGracePeriodSeconds"] >= int(pause[1]) + 15


def test_pods_run_unprivileged_on_a_read_only_root(rendered: Rendered) -> None:
    pod = rendered.pod["securityContext"]
    uid = int(IMAGE.one("USER").split(":")[0])
    assert pod["runAsNonRoot"] is True
    assert (pod["runAsUser"], pod["fsGroup"]) == (uid, uid)
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert rendered.pod["automountServiceAccountToken"] is False
    assert rendered.pod["enableServiceLinks"] is False  # no GATEWAY_PORT=tcp://… injected
    for container in rendered.containers():
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        assert context.get("runAsUser", uid) != 0, container["name"]
        resources = container["resources"]
        assert {"cpu", "memory"} <= resources["requests"].keys(), container["name"]
        assert "memory" in resources["limits"], container["name"]
    tmp, _ = rendered.mount_of("/tmp")
    assert "emptyDir" in rendered.volume(tmp["name"])


def test_secrets_are_read_only_and_state_is_shared(rendered: Rendered) -> None:
    env = rendered.env()
    mount, inside = rendered.mount_of(str(env["GATEWAY_SECRETS_DIR"]))
    assert inside == PurePosixPath(".")
    assert mount["readOnly"] is True
    secret = rendered.volume(mount["name"])["secret"]
    assert secret["secretName"] == SECRETS_NAME
    assert secret["defaultMode"] == 0o440  # the owner and group 10001 (fsGroup) only
    assert "items" not in secret, "every file `gateway state init` makes is mounted"
    state, inside = rendered.mount_of(str(env["GATEWAY_STATE_DIR"]))
    assert inside == PurePosixPath(".")
    assert not state.get("readOnly", False)
    claim = rendered.volume(state["name"])["persistentVolumeClaim"]["claimName"]
    pvc = next(p for p in rendered.of("PersistentVolumeClaim") if p["metadata"]["name"] == claim)
    # Replicas share the data keys; one pod may do with an ordinary volume.
    shared = rendered.one("HorizontalPodAutoscaler")["spec"]["maxReplicas"] > 1
    assert ("ReadWriteMany" in pvc["spec"]["accessModes"]) == shared, rendered.overlay


def test_contracts_and_keys_come_from_git_or_a_config_map(rendered: Rendered) -> None:
    """Production: a git-sync sidecar's checkout (a native sidecar whose startup probe waits
    for the first sync); dev: a ConfigMap laid out the same way, holding the repository's
    example contract and product."""
    env = rendered.env()
    for setting, top in (("GATEWAY_CONTRACTS_DIR", "contracts"), ("GATEWAY_KEYS_DIR", "keys")):
        mount, inside = rendered.mount_of(str(env[setting]))
        assert mount["readOnly"] is True, setting
        volume = rendered.volume(mount["name"])
        if rendered.overlay == "production":
            assert volume.keys() == {"name", "emptyDir"}
            sync = next(c for c in rendered.pod["initContainers"] if c["name"] == "git-sync")
            assert sync["image"].startswith("registry.k8s.io/git-sync/git-sync:v4.")
            assert sync["restartPolicy"] == "Always"
            assert sync["startupProbe"]["httpGet"]["path"] == "/"
            sync_env = {e["name"]: e.get("value") for e in sync["env"]}
            root = next(m for m in sync["volumeMounts"] if m["name"] == mount["name"])
            assert sync_env["GITSYNC_ROOT"] == root["mountPath"]
            assert inside == PurePosixPath(str(sync_env["GITSYNC_LINK"]), top)
            assert {"GITSYNC_REPO", "GITSYNC_PERIOD"} <= sync_env.keys()
        else:
            assert not rendered.pod.get("initContainers")
            items = volume["configMap"]["items"]
            config_map = next(
                m
                for m in rendered.of("ConfigMap")
                if m["metadata"]["name"] == volume["configMap"]["name"]
            )
            paths = {PurePosixPath(i["path"]): config_map["data"][i["key"]] for i in items}
            if top == "contracts":
                examples = {
                    inside / "acme-globex-orders.yaml": "acme-globex-orders.yaml",
                    inside / "products" / "orders.yaml": "products/orders.yaml",
                }
                for path, example in examples.items():
                    copy = (REPO / "contracts" / example).read_text()
                    assert paths.get(path) == copy, f"{path} differs from contracts/{example}"
            else:
                assert all(p.is_relative_to(inside) for p in paths if p.name.endswith(".json"))


def test_budget_autoscaler_policy_and_service_select_the_pods(rendered: Rendered) -> None:
    labels = rendered.pod_labels
    deployment = rendered.one("Deployment")
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    budget = rendered.one("PodDisruptionBudget")["spec"]
    policy = rendered.one("NetworkPolicy")["spec"]
    service = rendered.one("Service")["spec"]
    for selector in (budget["selector"]["matchLabels"], policy["podSelector"]["matchLabels"]):
        assert selector
        assert selector.items() <= labels.items()
    assert service["selector"]
    assert service["selector"].items() <= labels.items()
    autoscaler = rendered.one("HorizontalPodAutoscaler")["spec"]
    target = autoscaler["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
    assert target["name"] == deployment["metadata"]["name"]
    assert autoscaler["metrics"][0]["resource"]["name"] == "cpu"
    # A drain may always evict a pod while the others serve.
    floor = autoscaler["minReplicas"]
    assert budget.get("maxUnavailable", 0) >= 1 or budget["minAvailable"] < floor
    # Without Redis each pod enforces quota/REPLICAS: the floor of pods.
    assert rendered.env()["GATEWAY_QUOTAS__REPLICAS"] == str(floor)
    ports = {p["name"]: p["targetPort"] for p in service["ports"]}
    assert ports == {"http": "http", "metrics": "metrics"}


def test_network_policy_keeps_metrics_internal(rendered: Rendered) -> None:
    policy = rendered.one("NetworkPolicy")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    by_port = {p["port"]: rule for rule in policy["ingress"] for p in rule["ports"]}
    assert by_port.keys() == {"http", "metrics"}
    for port in by_port:
        peers = by_port[port]["from"]
        assert peers, f"{port}: open to every pod and address"
        assert all("namespaceSelector" in peer for peer in peers), port
    metrics_from = by_port["metrics"]["from"][0]["namespaceSelector"]["matchLabels"]
    assert metrics_from == {"kubernetes.io/metadata.name": "monitoring"}
    egress = {(p.get("protocol", "TCP"), p["port"]) for r in policy["egress"] for p in r["ports"]}
    assert {("UDP", 53), ("TCP", 6379)} <= egress
    kafka = str(rendered.env()["GATEWAY_KAFKA__BOOTSTRAP_SERVERS"])
    for address in kafka.split(","):
        assert ("TCP", int(address.rsplit(":", 1)[1])) in egress, f"Kafka at {address}"


def test_production_runs_three_pods_sharing_redis(rendered: Rendered) -> None:
    autoscaler = rendered.one("HorizontalPodAutoscaler")["spec"]
    redis = next(e for e in rendered.gateway["env"] if e["name"] == "GATEWAY_REDIS__URL")
    required = not redis["valueFrom"]["secretKeyRef"].get("optional", False)
    image = rendered.gateway["image"]
    if rendered.overlay == "production":
        assert "replicas" not in rendered.one("Deployment")["spec"], "the autoscaler owns it"
        assert autoscaler["minReplicas"] == 3
        assert required, "replicas must share quotas: GATEWAY_REDIS__URL is required"
        assert re.fullmatch(r".+/exchange-gateway:\d+\.\d+\.\d+", image), image
    else:
        assert rendered.one("Deployment")["spec"]["replicas"] == 1
        assert (autoscaler["minReplicas"], autoscaler["maxReplicas"]) == (1, 1)
        assert image == "exchange-gateway:dev"


def documented_secrets() -> dict[str, set[str] | None]:
    """The Secrets deploy/README.md tells the operator to create, with their keys (None: the
    files of a directory, any name)."""
    documented: dict[str, set[str] | None] = {}
    readme = (DEPLOY / "README.md").read_text()
    for line in re.findall(r"kubectl .*create secret generic .*", readme):
        words = shlex.split(line)
        name = words[words.index("generic") + 1]
        literals = {w.split("=")[1] for w in words if w.startswith("--from-literal=")}
        documented[name] = None if any(w.startswith("--from-file=") for w in words) else literals
    return documented


def test_every_secret_and_config_map_used_exists_or_is_documented(rendered: Rendered) -> None:
    assert not rendered.of("Secret"), "kustomize must not put secrets in a rendered manifest"
    documented = documented_secrets()
    assert documented.get(SECRETS_NAME, {""}) is None, "made from `gateway state init`'s files"
    config_maps = {m["metadata"]["name"]: m for m in rendered.of("ConfigMap")}
    used: list[tuple[str, str, str | None]] = []  # (kind, name, key)
    for volume in rendered.pod["volumes"]:
        if "secret" in volume:
            used.append(("Secret", volume["secret"]["secretName"], None))
        if "configMap" in volume:
            cm = volume["configMap"]
            used += [("ConfigMap", cm["name"], i["key"]) for i in cm.get("items", [])]
    for container in rendered.containers():
        for variable in container.get("env", []):
            source = variable.get("valueFrom", {})
            if "secretKeyRef" in source:
                used.append(
                    ("Secret", source["secretKeyRef"]["name"], source["secretKeyRef"]["key"])
                )
            if "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                used.append(("ConfigMap", ref["name"], ref["key"]))
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                used.append(("Secret", source["secretRef"]["name"], None))
            if "configMapRef" in source:
                used.append(("ConfigMap", source["configMapRef"]["name"], None))
    assert used
    for kind, name, key in used:
        if kind == "ConfigMap":
            assert name in config_maps, f"{rendered.overlay}: ConfigMap {name} is not rendered"
            assert key is None or key in config_maps[name]["data"], f"{name} has no {key}"
        else:
            assert name in documented, f"Secret {name}: neither rendered nor in deploy/README.md"
            keys = documented[name]
            assert key is None or keys is None or key in keys, f"{name}: README has no {key}"


def test_manifests_set_only_real_settings(rendered: Rendered) -> None:
    names = [e["name"] for e in rendered.gateway.get("env", [])]
    assert names
    assert all(n.startswith("GATEWAY_") for n in names), names
    assert not unknown_settings(names), f"{rendered.overlay}: not settings of the gateway"
    assert len(names) == len(set(names)), "a variable set twice"


#: What the operator's Secrets hold, in form (deploy/README.md).
SECRET_SAMPLES = {
    ("exchange-gateway-kafka", "password"): "a-password",
    ("exchange-gateway-redis", "url"): "rediss://:a-password@redis.redis.svc:6379/0",
}


def test_manifest_environment_loads_as_settings(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The values together (the image's, the manifest's, the Secrets' in form) are settings
    the gateway accepts: a combination it refuses would crash-loop every pod."""
    env = dict(IMAGE_ENV)
    for variable in rendered.gateway["env"]:
        source = variable.get("valueFrom", {})
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[variable["name"]] = SECRET_SAMPLES[ref["name"], ref["key"]]
        elif "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.name", variable
            env[variable["name"]] = "exchange-gateway-7d4b9c6f5-x2x9q"
        else:
            env[variable["name"]] = variable["value"]
    settings = settings_from(env, monkeypatch)
    assert settings.kafka.bootstrap_servers == env["GATEWAY_KAFKA__BOOTSTRAP_SERVERS"]
    assert settings.redis.url is not None
    assert settings.quotas.replicas == int(env["GATEWAY_QUOTAS__REPLICAS"])
    assert settings.replica == "exchange-gateway-7d4b9c6f5-x2x9q"


# -- docker-compose ----------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {str(k): str(v) for k, v in environment.items()}


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool

    @property
    def bind(self) -> bool:
        return self.source.startswith(("./", "/"))


def compose_mounts(service: dict[str, Any]) -> dict[str, Mount]:
    """The service's volumes by target (short syntax: ``source:target[:ro]``)."""
    mounts = {}
    for entry in service.get("volumes", []):
        source, target, *mode = entry.split(":")
        mounts[target] = Mount(source, target, mode == ["ro"])
    return mounts


def seconds(duration: str) -> float:
    """A Compose duration such as ``30s``, ``1m30s``."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, f"not a duration: {duration}"
    return sum(float(n) * units[u] for n, u in parts)


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads((REPO / "tests" / "schemas" / "compose-spec.json").read_text())
    assert schema["$schema"].startswith("http://json-schema.org/draft/2019-09/schema")
    jsonschema_rs.meta.validate(schema)
    validator = jsonschema_rs.Draft201909Validator(schema)
    errors = [
        f"{'.'.join(map(str, e.instance_path))}: {e.message}"
        for e in validator.iter_errors(compose())
    ]
    assert not errors, "\n".join(errors)


def test_compose_gateway_runs_as_the_image_does() -> None:
    services = compose()["services"]
    gateway, secrets = services["gateway"], services["secrets"]
    assert "user" not in gateway, "the image's user (uid 10001) owns the state volume"
    assert (gateway["image"], gateway["build"]) == (secrets["image"], secrets["build"])
    assert gateway["build"]["dockerfile"] == "deploy/Dockerfile"
    assert not unknown_settings(compose_env(gateway))
    assert gateway["depends_on"] == {
        "secrets": {"condition": "service_completed_successfully"},
        "kafka": {"condition": "service_healthy"},
        "redis": {"condition": "service_started"},
    }
    mounts = compose_mounts(gateway)
    owned = owned_directories(IMAGE, IMAGE.one("USER").split(":")[0])
    state = mounts[IMAGE_ENV["GATEWAY_STATE_DIR"]]
    assert (state.bind, state.read_only) == (False, False)
    assert state.target in owned
    secret_mount = mounts[IMAGE_ENV["GATEWAY_SECRETS_DIR"]]
    assert (secret_mount.bind, secret_mount.read_only) == (False, True)
    for setting in ("GATEWAY_CONTRACTS_DIR", "GATEWAY_KEYS_DIR"):
        assert mounts[IMAGE_ENV[setting]].read_only, setting
    # The one-shot makes the secrets in the same volume, as the image's user, before the start.
    made_by = compose_mounts(secrets)[secret_mount.target]
    assert (made_by.source, made_by.read_only) == (secret_mount.source, False)
    assert secrets["command"] == ["state", "init", secret_mount.target]
    assert "user" not in secrets
    assert secret_mount.target in owned
    assert gateway["read_only"] is True
    assert gateway["tmpfs"] == ["/tmp"]
    assert seconds(gateway["stop_grace_period"]) >= 15
    assert gateway["healthcheck"]["test"][0] == "CMD"
    assert "/readyz" in " ".join(gateway["healthcheck"]["test"])  # run in the start-up test


def test_compose_prometheus_scrapes_the_gateway() -> None:
    services = compose()["services"]
    mounts = compose_mounts(services["prometheus"])
    config = mounts["/etc/prometheus/prometheus.yml"]
    assert config.read_only
    assert (REPO / config.source).resolve() == PROMETHEUS / "prometheus.yml"
    prometheus = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (rules,) = prometheus["rule_files"]
    assert (REPO / mounts[rules].source).resolve() == PROMETHEUS / "alerts.yml"
    (job,) = prometheus["scrape_configs"]
    assert job["static_configs"] == [{"targets": [f"gateway:{IMAGE_ENV['GATEWAY_METRICS_PORT']}"]}]


def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    """Checked where the rules are (they are mounted at their absolute path in the container);
    without deploy/prometheus/alerts.yml, without rules."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed: `make test` installs it (Debian's prometheus)"
    prometheus = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    alerts = PROMETHEUS / "alerts.yml"
    if alerts.exists():
        shutil.copy(alerts, tmp_path / "alerts.yml")
        prometheus["rule_files"] = [str(tmp_path / "alerts.yml")]
    else:
        del prometheus["rule_files"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prometheus))
    done = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def tree(root: Path) -> dict[str, tuple[int, str]]:
    """Every file and directory under ``root``: its mode and, for files, a digest."""
    found = {}
    for path in sorted(root.rglob("*")):
        mode = path.lstat().st_mode
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        found[str(path.relative_to(root))] = (stat.S_IMODE(mode), digest)
    return found


@dataclass
class Container:
    """The compose gateway service's filesystem on this machine: each mount (and tmpfs) a
    directory under ``root``, bind mounts copied from the repository, named volumes empty, the
    ``:ro`` ones without write permission."""

    root: Path
    mounts: dict[str, Path] = field(default_factory=dict)

    def path(self, inside: str) -> str:
        """A path in the container, as seen here (under the mount that holds it)."""
        for target, here in sorted(self.mounts.items(), key=lambda m: -len(m[0])):
            if PurePosixPath(inside).is_relative_to(target):
                return str(here / PurePosixPath(inside).relative_to(target))
        raise AssertionError(f"{inside} is on no volume: the root filesystem is read-only")


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Container]:
    services = compose()["services"]
    gateway = services["gateway"]
    box = Container(tmp_path / "container")
    image_made = owned_directories(IMAGE, IMAGE.one("USER").split(":")[0])
    box.root.mkdir()
    for target, mount in compose_mounts(gateway).items():
        here = box.root / target.strip("/").replace("/", "_")
        if mount.bind:
            shutil.copytree(REPO / mount.source, here)
        else:
            here.mkdir(mode=image_made.get(target, 0o755))
        box.mounts[target] = here
    for target in gateway.get("tmpfs", []):
        box.mounts[target] = box.root / "tmp"
        box.mounts[target].mkdir()
    # The one-shot `secrets` service, with its command, into the volume the gateway reads.
    secrets = services["secrets"]
    command = [box.path(a) if a.startswith("/") else a for a in secrets["command"]]
    subprocess.run([sys.executable, "-m", "gateway", *command], check=True, timeout=60)
    for target, mount in compose_mounts(gateway).items():
        if mount.read_only:  # :ro, as far as permissions go (the tests may run as root)
            for path in [box.mounts[target], *box.mounts[target].rglob("*")]:
                path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)
    yield box
    for path in [box.root, *box.root.rglob("*")]:
        if path.is_dir():
            path.chmod(0o700)  # so that tmp_path can be removed


def test_gateway_starts_with_the_compose_environment_and_stops_on_sigterm(
    container: Container,
    kafka_bootstrap: str,
    redis_server: RedisServer,
    processes: Processes,
) -> None:
    """The image's environment and the compose file's, with the broker, Redis and ports of
    this machine in place of the compose network's: ready, alive, metrics, then SIGTERM ends
    it with status 143 within the grace period, having written only its state and /tmp."""
    gateway = compose()["services"]["gateway"]
    env = {k: v for k, v in IMAGE_ENV.items() if k.startswith(("GATEWAY_", "PYTHON"))}
    env |= compose_env(gateway)
    api_port = free_port()
    metrics_port = free_port()
    while metrics_port == api_port:  # both free now, neither bound yet: not the same one
        metrics_port = free_port()
    here = {
        "GATEWAY_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "GATEWAY_REDIS__URL": redis_server.url,
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(api_port),
        "GATEWAY_METRICS_PORT": str(metrics_port),
    }
    assert here.keys() <= env.keys()
    env |= here
    env = {k: container.path(v) if v.startswith("/") else v for k, v in env.items()}
    env["GATEWAY_LEDGER_TOPIC"] = f"ledger-{uuid.uuid4().hex[:8]}"  # the broker is shared
    secrets = Path(env["GATEWAY_SECRETS_DIR"])
    assert sorted(p.name for p in secrets.iterdir()) == sorted(SECRET_FILES)
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o500
    home = container.root / "home"
    home.mkdir(mode=0o500)
    env |= {"HOME": str(home), "TMPDIR": container.path("/tmp")}
    # Everything but the state directory and /tmp, as it was before the start.
    untouched = {
        name: tree(Path(env[name]))
        for name in ("GATEWAY_CONTRACTS_DIR", "GATEWAY_KEYS_DIR", "GATEWAY_SECRETS_DIR", "HOME")
    }
    system = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    log = container.root.parent / "gateway.log"
    command = gateway.get("command") or exec_form(IMAGE.one("CMD"))
    with log.open("wb") as output:
        server = processes.start(
            [sys.executable, "-m", "gateway", *command],
            env={**system, **env},
            cwd=container.path(IMAGE.one("WORKDIR")),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=5) as http:
        while True:
            assert server.poll() is None, f"the gateway exited:\n{log.read_text()}"
            try:
                if http.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"never ready:\n{log.read_text()}"
            time.sleep(0.1)
        assert http.get(f"{url}/livez").status_code == 200
        metrics = http.get(f"http://127.0.0.1:{env['GATEWAY_METRICS_PORT']}/metrics")
        assert metrics.status_code == 200
        assert "gateway_" in metrics.text
    # The image's health check (liveness) and the compose file's (readiness) pass, run as the
    # container runs them ("python" is the venv's, first on the image's PATH).
    for check in (image_healthcheck(), gateway["healthcheck"]["test"][1:]):
        assert check[0] == "python"
        ran = subprocess.run(
            [sys.executable, *check[1:]], env={**system, **env}, capture_output=True, timeout=30
        )
        assert ran.returncode == 0, ran.stderr.decode()
    grace = seconds(gateway["stop_grace_period"])
    started = time.monotonic()
    processes.stop(server, timeout=grace)
    assert time.monotonic() - started < grace
    # Shut down (lifespan ended: streams closed, ledger flushed), then ended by the SIGTERM
    # uvicorn raises again: the status Docker and a shell report as 143.
    assert server.returncode == -signal.SIGTERM
    lines = log.read_text().splitlines()
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    # GATEWAY_LOG_FORMAT=json from the image: one object a line, for the container's log.
    messages = [json.loads(line)["message"] for line in lines]
    assert "ledger writes succeed" in messages
    assert "Application shutdown complete." in messages
    for name, before in untouched.items():
        assert tree(Path(env[name])) == before, f"{name} was written"
