"""Renders the Helm chart with helm's own engine and checks what it would install.

Run through scripts/check-chart.sh, which provides the pinned packages:
helm-python-sdk (helm v4's chart loader, template engine and linter, compiled into a shared
library: no helm binary exists for this machine) and kubernetes-validate (the Kubernetes
OpenAPI schemas). For each set of values below it

- lints the chart as `helm lint --strict` does;
- renders it as `helm template` does and validates every object, strictly (unknown fields are
  errors), against the oldest and the newest Kubernetes schemas bundled;
- checks what the operator relies on: RBAC cut to the calls the code makes, a Lease Role for
  leader election, a non-root pod matching the image's user, the downward-API env, probes,
  and arguments the binary accepts.

Usage: check_chart.py STACKWARDEN_BINARY
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import helm_python
import kubernetes_validate
import kubernetes_validate.utils
import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "stackwarden"
RELEASE = "sw"
NAMESPACE = "stackwarden"

# What the operator calls, as (apiGroup, resource) -> verbs. Each verb is justified in
# templates/rbac.yaml; anything more (update, finalizers, core events, listing Secrets) fails.
STACK_RULES = {
    ("stackwarden.dev", "servicestacks"): {"get", "list", "watch", "patch"},
    ("stackwarden.dev", "servicestacks/status"): {"patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("", "secrets"): {"get"},
    ("apps", "controllerrevisions"): {"list", "create", "patch", "delete"},
}

# Each case: a name, the values given (as --set would), and what it must produce.
CASES = [
    ("defaults", {}),
    ("one namespace", {"watchNamespace": "ops"}),
    (
        "two copies, docker group, own lease and port",
        {
            "replicaCount": 2,
            "podSecurityContext": {"supplementalGroups": [999]},
            "leaderElection": {"leaseName": "sw-leader"},
            "httpPort": 9090,
            "shutdownTimeoutSeconds": 120,
        },
    ),
    (
        "remote engines, no probes, existing account, no RBAC",
        {
            "docker": {"socket": {"enabled": False}},
            "probes": {"enabled": False},
            "serviceAccount": {"create": False, "name": "ops-operator"},
            "rbac": {"create": False},
        },
    ),
]


class CheckFailed(Exception):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def merged(values: dict) -> dict:
    return helm_python.Chart.load(str(CHART)).merge_values(values)


def lint(values: dict) -> None:
    report = helm_python.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + [
        {"severity": 3, "path": "", "error": e} for e in report["errors"]
    ]
    expect(not problems, f"helm lint --strict: {problems}")


def render(values: dict) -> list[dict]:
    chart = helm_python.Chart.load(str(CHART))
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = []
    for path, text in sorted(rendered.items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return objects


def schema_versions() -> tuple[str, str]:
    """The oldest and the newest Kubernetes schemas bundled."""
    versions = sorted(set(kubernetes_validate.utils.all_versions()), key=_version_key)
    return versions[0], versions[-1]


def validate_schemas(objects: list[dict]) -> None:
    for version in schema_versions():
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                raise CheckFailed(
                    f"{obj['kind']}/{obj['metadata']['name']} is invalid for Kubernetes "
                    f"{version}: {e.message} at {'.'.join(map(str, e.path))}"
                ) from None


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [
        o
        for o in objects
        if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    expect(len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


def rule_verbs(role: dict) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        expect("resourceNames" not in rule, f"{role['metadata']['name']}: unexpected resourceNames")
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def _show(rules: dict[tuple[str, str], set[str]]) -> str:
    return ", ".join(f"{g or 'core'}/{r}: {' '.join(sorted(v))}" for (g, r), v in sorted(rules.items()))


def check_rbac(objects: list[dict], values: dict, account: str) -> None:
    kinds = {o["kind"] for o in objects}
    if not values["rbac"]["create"]:
        expect(not kinds & {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"},
               "rbac.create=false still renders RBAC")
        return
    scoped = values["watchNamespace"]
    kind = "Role" if scoped else "ClusterRole"
    role = one(objects, kind, f"{RELEASE}-stackwarden")
    expect(rule_verbs(role) == STACK_RULES, f"{kind} grants {_show(rule_verbs(role))}, not {_show(STACK_RULES)}")
    if scoped:
        expect(role["metadata"]["namespace"] == scoped, "the Role is not in watchNamespace")
        expect("ClusterRole" not in kinds, "watchNamespace still renders a ClusterRole")
    binding = one(objects, f"{kind}Binding", f"{RELEASE}-stackwarden")
    expect_binding(binding, kind, role["metadata"]["name"], account)

    lease_role = one(objects, "Role", f"{RELEASE}-stackwarden-leader-election")
    expect(lease_role["metadata"]["namespace"] == NAMESPACE, "the Lease Role is not in the release namespace")
    lease = values["leaderElection"]["leaseName"]
    grants = set()
    for rule in lease_role["rules"]:
        expect(rule["apiGroups"] == ["coordination.k8s.io"] and rule["resources"] == ["leases"],
               f"the Lease Role grants more than leases: {rule}")
        names = tuple(rule.get("resourceNames", []))
        grants.update((verb, names) for verb in rule["verbs"])
    wanted = {("create", ()), ("get", (lease,)), ("list", (lease,)), ("watch", (lease,)), ("patch", (lease,))}
    expect(grants == wanted, f"the Lease Role grants {sorted(grants)}, not {sorted(wanted)}")
    lease_binding = one(objects, "RoleBinding", f"{RELEASE}-stackwarden-leader-election")
    expect_binding(lease_binding, "Role", lease_role["metadata"]["name"], account)


def expect_binding(binding: dict, kind: str, role: str, account: str) -> None:
    expect(binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
           f"{binding['metadata']['name']} binds {binding['roleRef']}")
    expect(binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}],
           f"{binding['metadata']['name']} binds {binding['subjects']}")


def image_user() -> int:
    dockerfile = (REPO / "scripts" / "image" / "Dockerfile").read_text()
    match = re.search(r"^USER (\d+)(?::\d+)?$", dockerfile, re.MULTILINE)
    expect(match is not None, "scripts/image/Dockerfile has no numeric USER")
    return int(match.group(1))


def crate_version() -> str:
    cargo = (REPO / "operator" / "Cargo.toml").read_text()
    return re.search(r'^version = "([^"]+)"$', cargo, re.MULTILINE).group(1)


def check_pod(objects: list[dict], values: dict, account: str, controller_help: str) -> None:
    deployment = one(objects, "Deployment")
    spec = deployment["spec"]
    expect(spec["replicas"] == values["replicaCount"], "replicas is not replicaCount")
    expect(spec["strategy"]["type"] == "RollingUpdate", "the Deployment does not roll updates")
    pod = spec["template"]["spec"]
    expect(pod["serviceAccountName"] == account, f"the pod runs as {pod['serviceAccountName']}")
    if values["serviceAccount"]["create"]:
        one(objects, "ServiceAccount", account)
    else:
        expect(not [o for o in objects if o["kind"] == "ServiceAccount"], "an existing account is re-created")

    security = pod["securityContext"]
    expect(security.get("runAsNonRoot") is True, "the pod may run as root")
    expect(security.get("seccompProfile") == {"type": "RuntimeDefault"}, "no RuntimeDefault seccomp profile")
    expect(security.get("runAsUser") == image_user(), "runAsUser differs from the image's USER")
    expect(security.get("supplementalGroups", []) == values["podSecurityContext"]["supplementalGroups"],
           "supplementalGroups are not passed through")

    (container,) = pod["containers"]
    expect(container["image"] == f"stackwarden:{crate_version()}",
           f"the default image {container['image']} is not the operator crate's version")
    context = container["securityContext"]
    expect(context["allowPrivilegeEscalation"] is False, "privilege escalation allowed")
    expect(context["readOnlyRootFilesystem"] is True, "writable root filesystem")
    expect(context["capabilities"] == {"drop": ["ALL"]}, "capabilities not all dropped")

    env = {e["name"]: e for e in container["env"]}
    for name, field in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")):
        expect(env.get(name, {}).get("valueFrom") == {"fieldRef": {"fieldPath": field}},
               f"{name} does not come from {field}")

    args = container["args"]
    expect(args[0] == "controller", f"the container does not run `controller`: {args}")
    expect(_arg(args, "--lease-name") == values["leaderElection"]["leaseName"], "--lease-name is not leaderElection.leaseName")
    expect(_arg(args, "--metrics-addr") == f"0.0.0.0:{values['httpPort']}", "--metrics-addr is not httpPort")
    shutdown = values["shutdownTimeoutSeconds"]
    expect(_arg(args, "--shutdown-timeout") == str(shutdown), "--shutdown-timeout is not shutdownTimeoutSeconds")
    expect(pod["terminationGracePeriodSeconds"] > shutdown,
           "the kubelet would kill a leader still waiting for its backup jobs")
    for flag in (a for a in args[1:] if a.startswith("--")):
        expect(re.search(rf"(^|\s){re.escape(flag)}\b", controller_help) is not None,
               f"`stackwarden controller` has no {flag} option")
    expect(container["ports"] == [{"name": "http", "containerPort": values["httpPort"], "protocol": "TCP"}],
           f"ports: {container['ports']}")
    check_probes(container, values)
    check_socket(pod, container, values)


def _arg(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def check_probes(container: dict, values: dict) -> None:
    probes = {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in probes.items():
        if values["probes"]["enabled"]:
            expect(container.get(probe, {}).get("httpGet") == {"path": path, "port": "http"},
                   f"{probe} is not {path} on port http")
        else:
            expect(probe not in container, f"{probe} present with probes.enabled=false")


def check_socket(pod: dict, container: dict, values: dict) -> None:
    socket = values["docker"]["socket"]
    volumes = [v for v in pod.get("volumes", []) if v["name"] == "docker-socket"]
    mounts = [m for m in container.get("volumeMounts", []) if m["name"] == "docker-socket"]
    if socket["enabled"]:
        expect(volumes == [{"name": "docker-socket", "hostPath": {"path": socket["hostPath"], "type": "Socket"}}],
               f"socket volume: {volumes}")
        expect(mounts == [{"name": "docker-socket", "mountPath": socket["mountPath"]}], f"socket mount: {mounts}")
    else:
        expect(not volumes and not mounts, "the socket is mounted with docker.socket.enabled=false")


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    controller_help = subprocess.run(
        [sys.argv[1], "controller", "--help"], check=True, capture_output=True, text=True
    ).stdout
    print(f"check-chart: helm {helm_python.helm_sdk_version()} (helm-python-sdk), "
          f"Kubernetes schemas {' and '.join(schema_versions())}")
    failed = 0
    for name, given in CASES:
        try:
            values = merged(given)
            lint(given)
            objects = render(given)
            validate_schemas(objects)
            account = values["serviceAccount"]["name"] or f"{RELEASE}-stackwarden"
            check_rbac(objects, values, account)
            check_pod(objects, values, account, controller_help)
        except (CheckFailed, helm_python.HelmError) as e:
            failed += 1
            print(f"check-chart: FAILED {name}: {e}")
        else:
            print(f"check-chart: ok {name} ({len(objects)} objects)")
    print(f"check-chart: {failed} of {len(CASES)} cases failed" if failed else f"check-chart: all {len(CASES)} cases pass")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
