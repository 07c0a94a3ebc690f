"""The trust boundary on the real cluster (docs/security.md): an application team member who may create
DatabaseBackups and DatabaseRestores in their namespace, and read its StatefulSets and Services, but not its Secrets
(a real RBAC user: every apply is `kubectl --as`), tries to get the database's password or its data sent to an
"attacker" listener Pod in another namespace. Every attempt is refused naming the field, including one that was
accepted and turned bad afterwards (its Service made an ExternalName to the listener), and the listener, which logs
every connection it gets on the database, S3 and HTTPS ports, receives nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e import databases
from tests.e2e.kube import Kube, wait_for
from tests.fixtures import backup_author_rbac

NAMESPACE = "e2e-trust"
ATTACKER = "e2e-attacker"
AUTHOR = "app-developer"
PASSWORD = "e2e-trust-password-sentinel-5c2e91"  # the database's own, looked for in every status, Event and log
LISTENER = "collector"
PORTS = (5432, 3306, 8333, 8443)
HEALTH_PORT = 9000  # the kubelet's readiness probe connects here, and only here: not logged
# Logs one line per connection on any of PORTS, and what arrived on it (nothing should).
LISTEN = """
import selectors, socket, sys
health, *ports = [int(p) for p in sys.argv[1:]]
selector = selectors.DefaultSelector()
for port in [health, *ports]:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen()
    selector.register(server, selectors.EVENT_READ, port)
print("listening", ports, flush=True)
while True:
    for key, _ in selector.select():
        connection, peer = key.fileobj.accept()
        if key.data == health:
            connection.close()
            continue
        connection.settimeout(2)
        try:
            data = connection.recv(4096)
        except OSError:
            data = b""
        print("CONNECTION", key.data, peer[0], data[:200].hex(), flush=True)
        connection.close()
"""


def listener() -> list[dict[str, Any]]:
    labels = {"app.kubernetes.io/name": LISTENER}
    container = {
        "name": "listen",
        "image": os.environ["E2E_IMG"],
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-c", LISTEN, str(HEALTH_PORT), *map(str, PORTS)],
        "ports": [{"containerPort": port} for port in PORTS],
        "readinessProbe": {"tcpSocket": {"port": HEALTH_PORT}, "periodSeconds": 2},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": LISTENER, "namespace": ATTACKER, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": LISTENER, "namespace": ATTACKER},
        "spec": {"selector": labels, "ports": [{"name": f"p{port}", "port": port} for port in PORTS]},
    }
    return [deployment, service]


@pytest.fixture(scope="module")
def world(kube: Kube, deployed: str) -> Iterator[databases.Database]:
    with databases.namespace(kube, ATTACKER), databases.namespace(kube, NAMESPACE):
        kube.apply(*listener())
        db = databases.Database("postgresql", "17", "trust-db", NAMESPACE, PASSWORD)
        databases.deploy(kube, db)
        kube.apply(*backup_author_rbac(NAMESPACE, AUTHOR))
        kube.wait_rollout(ATTACKER, f"deployment/{LISTENER}")
        databases.wait_ready(kube, db)
        yield db


def as_author(kube: Kube, document: dict[str, Any]) -> Any:
    return kube.run("apply", f"--as={AUTHOR}", "-f", "-", input_text=json.dumps(document), check=False)


def connections(kube: Kube) -> list[str]:
    pods = kube.items("pods", ATTACKER, f"app.kubernetes.io/name={LISTENER}")
    log = "".join(kube.logs(ATTACKER, pod["metadata"]["name"]) for pod in pods)
    assert "listening" in log, log
    return [line for line in log.splitlines() if line.startswith("CONNECTION")]


def restore(name: str, target: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "databases.test.io/v1",
        "kind": "DatabaseRestore",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"source": {"databaseBackup": "accepted"}, "target": target},
    }


def test_the_author_cannot_send_the_password_or_the_data_to_a_listener_of_theirs(
    kube: Kube, world: databases.Database
) -> None:
    db = world
    collector = f"{LISTENER}.{ATTACKER}.svc"
    assert (
        kube.run("auth", "can-i", "get", "secrets", f"--as={AUTHOR}", "-n", NAMESPACE, check=False).stdout.strip()
        == "no"
    )
    attempts = {
        "spec.connection.host": databases.databasebackup(
            "to-collector", db, "* * * * *", backup_now="now", connection={"host": collector, "port": 5432}
        ),
        'spec.connection.host: "trust-db.e2e-trust.svc.': databases.databasebackup(
            "look-alike", db, "* * * * *", connection={"host": f"{db.host}.{collector}"}
        ),
        'unknown field "spec.storage.s3.endpoint"': databases.databasebackup(
            "to-bucket",
            db,
            "* * * * *",
            storage={"s3": {"store": "any", "endpoint": f"http://{collector}:8333"}},
        ),
        "spec.verify.image": databases.databasebackup(
            "own-image", db, "* * * * *", verify={"restoreTest": True, "image": os.environ["E2E_IMG"]}
        ),
    }
    for field, document in attempts.items():
        result = as_author(kube, document)
        assert result.returncode != 0, (field, result.stdout)
        assert field in result.stderr, (field, result.stderr)
    assert kube.items("dbb", NAMESPACE) == []

    # A backup to the database's own Service is accepted; a restore from it to the listener is not.
    kube.apply(databases.databasebackup("accepted", db, "0 0 1 1 *"))
    result = as_author(
        kube,
        restore(
            "to-collector",
            {"external": {"host": collector, "port": 5432}, "credentialsSecret": {"name": f"{db.name}-credentials"}},
        ),
    )
    assert result.returncode != 0
    assert f'spec.target.external.host: "{collector}" is not a Service of namespace "{NAMESPACE}"' in result.stderr


def test_a_service_turned_into_an_external_name_after_admission_stops_the_next_run(
    kube: Kube, world: databases.Database
) -> None:
    db = world
    labels = {"app.kubernetes.io/name": db.name}
    alias = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "alias", "namespace": NAMESPACE},
        "spec": {"selector": labels, "ports": [{"port": 5432}]},
    }
    kube.apply(alias)
    accepted = as_author(
        kube, databases.databasebackup("via-alias", db, "0 0 1 1 *", connection={"host": f"alias.{NAMESPACE}.svc"})
    )
    assert accepted.returncode == 0, accepted.stderr
    # Someone who may edit Services points it at the listener (a CNAME), after the webhook judged the host.
    kube.run("delete", "service", "alias", "-n", NAMESPACE)
    external = {"type": "ExternalName", "externalName": f"{LISTENER}.{ATTACKER}.svc.cluster.local"}
    kube.apply({**alias, "spec": external})
    kube.run("annotate", "--overwrite", "dbb", "via-alias", "-n", NAMESPACE, "databases.test.io/backup-now=after")

    def refused() -> dict[str, Any] | None:
        status: dict[str, Any] = kube.get("dbb", "via-alias", NAMESPACE).get("status", {})
        ready: dict[str, Any] = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
        return status if ready.get("reason") == "Refused" else None

    status = wait_for("the reconciler to refuse the run", refused, 180)
    assert status["phase"] == "Invalid"
    message = next(c for c in status["conditions"] if c["type"] == "Ready")["message"]
    assert 'spec.connection.host: "alias.e2e-trust.svc": Service "alias" is an ExternalName' in message
    jobs = kube.items("jobs", NAMESPACE, "databases.test.io/databasebackup=via-alias")
    assert jobs == [], [j["metadata"]["name"] for j in jobs]
    events = [e["reason"] for e in kube.events(NAMESPACE, "via-alias")]
    assert "Refused" in events


def test_the_listener_received_nothing_and_no_status_event_or_log_holds_the_password(
    kube: Kube, world: databases.Database
) -> None:
    assert connections(kube) == []
    seen = json.dumps(kube.items("dbb", NAMESPACE)) + json.dumps(kube.items("dbr", NAMESPACE))
    seen += json.dumps(kube.items("events", NAMESPACE))
    for pod in kube.items("pods", "dbb-system"):
        for container in pod["spec"]["containers"]:
            seen += kube.logs("dbb-system", pod["metadata"]["name"], container=container["name"])
    assert PASSWORD not in seen
