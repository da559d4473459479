"""The deployment files are valid and say what docs/deployment.md promises.

- docker-compose.yml: the compose-spec JSON schema (check-jsonschema), then what the schema cannot
  see: depends_on targets, named volumes, bind-mount sources, healthchecks, the production settings
  of the streamer services (loaded through streamer's own Settings), Prometheus' scrape targets.
- k8s/: ``kustomize build`` (or ``kubectl kustomize``) of the base and each overlay, validated with
  ``kubernetes-validate --strict -k 1.30.0`` (CRDs such as ServiceMonitor only warn; they are
  checked by hand here), and the properties the manifests must have.
- Dockerfile: non-root USER, HEALTHCHECK, entrypoint, model volume (no docker engine here to build it).

Tools: tools/install-deploy-tools.sh installs kustomize (if kubectl has none) and the validators.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamer.config.settings import Settings, load_settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
K8S = REPO / "k8s"
KUSTOMIZATIONS = ["base", "overlays/dev", "overlays/production"]
K8S_VERSION = "1.30.0"
SECRET_NAME = "streamer-credentials"
DURATION = re.compile(r"^(\d+(\.\d+)?(us|ms|s|m|h))+$")
# Kinds kubernetes-validate has no schema for (CRDs): they may only warn, and are checked below.
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def _tool(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: run tools/install-deploy-tools.sh", pytrace=False)
    return found


def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def _check_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Load streamer's Settings from ``env`` exactly as the service would: unknown or invalid
    STREAMER_* variables fail here instead of at start-up in a cluster."""
    for name in list(os.environ):
        if name.startswith("STREAMER_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("STREAMER_"):
            monkeypatch.setenv(name, str(value))
    return load_settings()


# ---------------------------------------------------------------------------------------------
# docker compose
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _env_dict(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _depends(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def _volume_source(entry: Any) -> tuple[str, str]:
    """(type, source) of a service volume entry, short or long syntax."""
    if isinstance(entry, dict):
        return entry.get("type", "volume"), str(entry.get("source", ""))
    parts = str(entry).split(":")
    if len(parts) == 1:
        return "anonymous", ""
    source = parts[0]
    kind = "bind" if source.startswith((".", "/", "~", "$")) else "volume"
    return kind, source


def test_compose_schema() -> None:
    res = _run([_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert res.returncode == 0, res.stdout + res.stderr


def test_compose_references(compose: dict[str, Any]) -> None:
    services = compose["services"]
    declared_volumes = set(compose.get("volumes") or {})
    used_volumes: set[str] = set()
    for name, svc in services.items():
        for target, condition in _depends(svc).items():
            assert target in services, f"{name}: depends_on {target!r} is not a service"
            assert target != name
            assert condition in {"service_started", "service_healthy", "service_completed_successfully"}
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} to be healthy: no healthcheck"
        for entry in svc.get("volumes") or []:
            kind, source = _volume_source(entry)
            if kind == "volume":
                assert source in declared_volumes, f"{name}: volume {source!r} is not declared under volumes:"
                used_volumes.add(source)
            elif kind == "bind":
                path = (COMPOSE.parent / source).resolve()
                assert path.exists(), f"{name}: bind mount source {source} does not exist"
        for port in svc.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name}: port {port} is published on every interface"
    assert declared_volumes == used_volumes, f"declared but unused volumes: {declared_volumes - used_volumes}"
    # no dependency cycle
    order: list[str] = []
    visiting: set[str] = set()

    def visit(n: str) -> None:
        if n in order:
            return
        assert n not in visiting, f"depends_on cycle through {n}"
        visiting.add(n)
        for d in _depends(services[n]):
            visit(d)
        visiting.discard(n)
        order.append(n)

    for n in services:
        visit(n)


def test_compose_healthchecks(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        hc = svc.get("healthcheck")
        assert hc, f"{name} has no healthcheck"
        test = hc["test"]
        if isinstance(test, list):
            assert test[0] in {"CMD", "CMD-SHELL"}, f"{name}: healthcheck test must start with CMD or CMD-SHELL"
            assert len(test) >= 2 and all(isinstance(p, str) and p for p in test), f"{name}: empty healthcheck"
            if test[0] == "CMD-SHELL":
                assert len(test) == 2, f"{name}: CMD-SHELL takes one shell string"
        else:
            assert isinstance(test, str) and test.strip(), f"{name}: empty healthcheck"
        for key in ("interval", "timeout", "start_period", "start_interval"):
            if key in hc:
                assert DURATION.match(str(hc[key])), f"{name}: healthcheck {key}={hc[key]!r} is not a duration"
        assert int(hc.get("retries", 3)) >= 1
        assert set(hc) <= {"test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"}


def test_compose_streamer_services(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose["services"]
    roles = {}
    for name in ("streamer-ingest", "streamer-recluster"):
        svc = services[name]
        command = svc["command"]
        assert command[:2] == ["run", "--role"], command
        roles[name] = command[2]
        env = _env_dict(svc)
        settings = _check_settings(env, monkeypatch)
        assert settings.embedding.model == "BAAI/bge-m3"
        assert settings.embedding.offline is False
        assert settings.milvus.index_type == "HNSW"
        assert settings.milvus.uri == "http://milvus:19530"
        assert settings.milvus.is_server
        assert settings.service.http_host == "0.0.0.0"
        host, port = settings.kafka.bootstrap_servers.split(":")
        assert host in services and services[host]["image"].startswith("apache/kafka")
        assert any(_volume_source(v) == ("volume", "models") for v in svc["volumes"])
        assert env.get("HF_HOME") == "/models"
        deps = _depends(svc)
        assert deps.get("kafka") == "service_healthy" and deps.get("milvus") == "service_healthy"
        hc = " ".join(svc["healthcheck"]["test"])
        assert f":{settings.service.http_port}/readyz" in hc
    assert roles == {"streamer-ingest": "ingest", "streamer-recluster": "recluster"}
    assert services["streamer-ingest"]["deploy"]["replicas"] == 2
    assert services["streamer-recluster"]["deploy"]["replicas"] == 2  # leader + standby, as test_topology runs
    partitions = int(_env_dict(services["streamer-ingest"])["STREAMER_KAFKA__PARTITIONS"])
    assert services["streamer-ingest"]["deploy"]["replicas"] <= partitions
    milvus = services["milvus"]
    assert milvus["image"].startswith("milvusdb/milvus:v2.4.")
    assert milvus["command"] == ["milvus", "run", "standalone"]
    assert {"etcd", "minio"} <= set(_depends(milvus))
    assert services["etcd"]["image"].startswith("quay.io/coreos/etcd")
    assert services["minio"]["image"].startswith("minio/minio")
    kafka_env = _env_dict(services["kafka"])
    assert "controller" in kafka_env["KAFKA_PROCESS_ROLES"] and "broker" in kafka_env["KAFKA_PROCESS_ROLES"]


def test_compose_prometheus_and_grafana(compose: dict[str, Any]) -> None:
    services = compose["services"]
    mounts = {}
    for entry in services["prometheus"]["volumes"]:
        kind, source = _volume_source(entry)
        if kind == "bind":
            mounts[str(entry).split(":")[1]] = (COMPOSE.parent / source).resolve()
    config_path = mounts["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load(config_path.read_text())
    for rule_file in config["rule_files"]:
        assert "/etc/prometheus/" + rule_file in mounts, f"rule file {rule_file} is not mounted"
    scraped: set[str] = set()
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for host in sd["names"]:
                assert host in services, f"job {job['job_name']} scrapes {host}, not a compose service"
                scraped.add(host)
                port = int(_env_dict(services[host])["STREAMER_SERVICE__HTTP_PORT"])
                assert sd["port"] == port
    assert {"streamer-ingest", "streamer-recluster"} <= scraped
    # Grafana: provisioning folders and the dashboards folder exist, and the file provider points
    # at the path where ./dashboards is mounted.
    grafana_mounts = {}
    for entry in services["grafana"]["volumes"]:
        kind, source = _volume_source(entry)
        if kind == "bind":
            grafana_mounts[str(entry).split(":")[1]] = (COMPOSE.parent / source).resolve()
    provider_dir = grafana_mounts["/etc/grafana/provisioning/dashboards"]
    providers = yaml.safe_load(next(provider_dir.glob("*.yaml")).read_text())["providers"]
    dash_path = providers[0]["options"]["path"]
    assert grafana_mounts[dash_path] == (REPO / "dashboards").resolve()
    datasources = yaml.safe_load(
        next(grafana_mounts["/etc/grafana/provisioning/datasources"].glob("*.yaml")).read_text()
    )["datasources"]
    assert datasources[0]["uid"] == "prometheus" and datasources[0]["url"] == "http://prometheus:9090"


# ---------------------------------------------------------------------------------------------
# Kubernetes
# ---------------------------------------------------------------------------------------------


def _kustomize(path: Path) -> str:
    if shutil.which("kustomize"):
        cmd = ["kustomize", "build", str(path)]
    elif shutil.which("kubectl"):
        cmd = ["kubectl", "kustomize", str(path)]
    else:
        pytest.fail("neither kustomize nor kubectl found: run tools/install-deploy-tools.sh", pytrace=False)
    res = _run(cmd)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stderr}"
    return res.stdout


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[dict[str, Any]]]]:
    out = {}
    folder = tmp_path_factory.mktemp("k8s")
    for name in KUSTOMIZATIONS:
        text = _kustomize(K8S / name)
        path = folder / (name.replace("/", "-") + ".yaml")
        path.write_text(text)
        out[name] = (path, [doc for doc in yaml.safe_load_all(text) if doc])
    return out


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _container(deploy: dict[str, Any]) -> dict[str, Any]:
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    return container


def _config(docs: list[dict[str, Any]], deploy: dict[str, Any]) -> dict[str, str]:
    (ref,) = [e["configMapRef"]["name"] for e in _container(deploy)["envFrom"]]
    return _one(docs, "ConfigMap", ref)["data"]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _quantity_bytes(q: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 1e3, "M": 1e6, "G": 1e9}
    for suffix, mult in units.items():
        if q.endswith(suffix):
            return float(q[: -len(suffix)]) * mult
    return float(q)


def _cpu(q: str | int | float) -> float:
    q = str(q)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kubernetes_validate(name: str, rendered: dict[str, Any]) -> None:
    path, docs = rendered[name]
    res = _run([_tool("kubernetes-validate"), "--strict", "-k", K8S_VERSION, str(path)])
    output = res.stdout + res.stderr
    assert res.returncode == 0, output
    for line in output.splitlines():
        if line.startswith(("ERROR", "WARN")):
            assert any(f"kind {kind} " in line for kind in CRD_KINDS), f"unexpected: {line}"
    validated = len(re.findall(r"^INFO .* passed for resource", output, re.M))
    assert validated == sum(1 for d in docs if d["kind"] not in CRD_KINDS), output


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_workloads(name: str, rendered: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    _, docs = rendered[name]
    ingest = _one(docs, "Deployment", "streamer-ingest")
    recluster = _one(docs, "Deployment", "streamer-recluster")
    # re-clusterer: leader + standby, as test_topology runs; rolled one at a time with no surge
    # (one of them always runs, never three windows' worth of memory)
    assert recluster["spec"]["replicas"] == 2
    assert recluster["spec"]["strategy"]["type"] == "RollingUpdate"
    assert recluster["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert _container(recluster)["args"] == ["run", "--role", "recluster"]
    assert _container(ingest)["args"] == ["run", "--role", "ingest"]

    config = _config(docs, ingest)
    assert config == _config(docs, recluster)
    dummy_secrets = {"STREAMER_KAFKA__SASL_PASSWORD": "x", "STREAMER_MILVUS__TOKEN": "x"}
    settings = _check_settings({**config, **dummy_secrets}, monkeypatch)
    assert settings.service.http_host == "0.0.0.0"
    partitions = settings.kafka.partitions
    assert ingest["spec"]["replicas"] <= partitions
    if name != "overlays/dev":
        assert settings.embedding.model == "BAAI/bge-m3" and settings.milvus.index_type == "HNSW"

    for deploy in (ingest, recluster):
        pod = deploy["spec"]["template"]["spec"]
        c = _container(deploy)
        port = {p["name"]: p["containerPort"] for p in c["ports"]}["http"]
        assert port == settings.service.http_port
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert c[probe]["httpGet"]["port"] in ("http", port)
        res = c["resources"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(res[kind]), f"{deploy['metadata']['name']}: {kind} incomplete"
        assert _cpu(res["requests"]["cpu"]) <= _cpu(res["limits"]["cpu"])
        assert _quantity_bytes(res["requests"]["memory"]) <= _quantity_bytes(res["limits"]["memory"])
        if name != "overlays/dev":  # BGE-M3 needs ~2 GiB
            assert _quantity_bytes(res["limits"]["memory"]) >= 2 * 2**30
            assert 1 <= _cpu(res["requests"]["cpu"]) and _cpu(res["limits"]["cpu"]) <= 2
        # non-root, read-only root filesystem, writable /tmp and model cache
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        assert mounts["/models"] in volumes and config["HF_HOME"] == "/models"
        if name == "overlays/production":
            claim = volumes[mounts["/models"]]["persistentVolumeClaim"]["claimName"]
            _one(docs, "PersistentVolumeClaim", claim)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_scaling_and_monitoring(name: str, rendered: dict[str, Any]) -> None:
    _, docs = rendered[name]
    ingest = _one(docs, "Deployment", "streamer-ingest")
    recluster = _one(docs, "Deployment", "streamer-recluster")
    ingest_labels = ingest["spec"]["template"]["metadata"]["labels"]
    recluster_labels = recluster["spec"]["template"]["metadata"]["labels"]
    partitions = int(_config(docs, ingest)["STREAMER_KAFKA__PARTITIONS"])

    (hpa,) = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "streamer-ingest"}
    assert hpa["spec"]["minReplicas"] <= ingest["spec"]["replicas"] <= hpa["spec"]["maxReplicas"] <= partitions
    metrics = hpa["spec"]["metrics"]
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in metrics)
    lag = [m for m in metrics if m["type"] in ("Pods", "External")]
    assert lag and lag[0][lag[0]["type"].lower()]["metric"]["name"] == "streamer_consumer_lag_messages"

    (pdb,) = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert _matches(selector, ingest_labels) and not _matches(selector, recluster_labels)

    service = _one(docs, "Service", "streamer")
    assert _matches(service["spec"]["selector"], ingest_labels)
    assert _matches(service["spec"]["selector"], recluster_labels)
    (svc_port,) = service["spec"]["ports"]
    assert svc_port["targetPort"] == "http"

    monitor = _one(docs, "ServiceMonitor", "streamer")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert _matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == svc_port["name"] and endpoint["path"] == "/metrics"
    assert DURATION.match(endpoint["interval"])


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_secrets_referenced_not_inlined(name: str, rendered: dict[str, Any]) -> None:
    _, docs = rendered[name]
    secret_words = ("PASSWORD", "TOKEN", "SECRET", "KEY")
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            leaked = [k for k in doc["data"] if any(w in k.upper() for w in secret_words)]
            assert not leaked, f"secret-looking keys in ConfigMap: {leaked}"
    refs: set[str] = set()
    for deploy in (d for d in docs if d["kind"] == "Deployment"):
        env = {e["name"]: e for e in _container(deploy)["env"]}
        for var in ("STREAMER_KAFKA__SASL_PASSWORD", "STREAMER_MILVUS__TOKEN"):
            assert "value" not in env[var], f"{var} is inlined"
            ref = env[var]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == SECRET_NAME
            refs.add(ref["key"])
        for e in env.values():
            if any(w in e["name"] for w in secret_words):
                assert "value" not in e, f"{e['name']} is inlined"
    secrets = [d for d in docs if d["kind"] == "Secret"]
    if name == "overlays/dev":  # the example Secret, placeholders only
        (secret,) = secrets
        assert secret["metadata"]["name"] == SECRET_NAME
        assert set(secret["stringData"]) == refs
        assert all(v == "change-me" for v in secret["stringData"].values())
    else:
        assert not secrets, "Secrets belong outside the repository (only the dev overlay has an example)"


def test_base_is_namespace_agnostic(rendered: dict[str, Any]) -> None:
    _, docs = rendered["base"]
    assert all("namespace" not in d["metadata"] for d in docs)
    for name in ("overlays/dev", "overlays/production"):
        namespaces = {d["metadata"].get("namespace") for d in rendered[name][1]}
        assert len(namespaces) == 1 and None not in namespaces


# ---------------------------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of every instruction, continuation lines joined."""
    text = (REPO / "Dockerfile").read_text()
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def _dockerignored(rel: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        if fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(rel, pat + "/*") or (pat == "**"):
            ignored = not negate
    return ignored


def test_dockerfile() -> None:
    instructions = _dockerfile()
    stages = [i for i, (op, _) in enumerate(instructions) if op == "FROM"]
    final = instructions[stages[-1]:]
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for op, a in instructions if op == "ARG" and "=" in a}
    base = final[0][1].split()[0]
    base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), base)
    assert re.match(r"python:3\.11-slim", base), base

    users = [a for op, a in final if op == "USER"]
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, f"USER {users[-1]} is root"

    healthchecks = [a for op, a in final if op == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "CMD" in healthchecks[0] and "/healthz" in healthchecks[0]
    assert [a for op, a in final if op == "ENTRYPOINT"][-1] == '["streamer"]'
    assert [a for op, a in final if op == "CMD"][-1] == '["run"]'
    assert any(op == "VOLUME" and "/models" in a for op, a in final)

    env: dict[str, str] = {}
    for op, a in final:
        if op == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", a):
                env[key] = value
    assert env["HF_HOME"] == "/models"
    assert env["STREAMER_SERVICE__HTTP_HOST"] == "0.0.0.0"
    assert any(op == "RUN" and "pip install ." in a for op, a in instructions)

    # the console script the ENTRYPOINT names exists
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "streamer" in project["scripts"]

    # every COPY source from the build context exists and is not excluded by .dockerignore
    patterns = [
        p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    for op, a in instructions:
        if op != "COPY" or a.startswith("--from"):
            continue
        *sources, _dest = a.split()
        for src in sources:
            assert (REPO / src).exists(), f"COPY {src}: not in the repository"
            assert not _dockerignored(src.rstrip("/"), patterns), f"COPY {src}: excluded by .dockerignore"
    for needed in ("streamer/service.py", "pyproject.toml"):
        assert not _dockerignored(needed, patterns), f"{needed} is excluded by .dockerignore"
    for unwanted in (".venv", ".git", "tests", ".cache"):
        assert _dockerignored(unwanted, patterns), f"{unwanted} is sent to the docker build context"


def test_dockerfile_env_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env: dict[str, str] = {}
    for op, a in _dockerfile():
        if op == "ENV":
            env.update(dict(re.findall(r"(STREAMER_\w+)=(\S+)", a)))
    settings = _check_settings(env, monkeypatch)
    assert settings.service.http_port == 9400
