"""Objects the tests build: DatabaseBackups, database StatefulSets, AdmissionReviews."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from common.constants import API_VERSION, GROUP, KIND
from reconciler.trust import NamespaceFacts


def databasebackup(name: str = "nightly", namespace: str = "shop", **spec: Any) -> dict[str, Any]:
    body = {"databaseName": "example-db", "schedule": "*/5 * * * *", **spec}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {k: v for k, v in body.items() if v is not None},
    }


def statefulset(
    name: str = "example-db",
    namespace: str = "shop",
    *,
    image: str = "postgres:16",
    ready: int = 1,
    env: list[dict[str, Any]] | None = None,
    ports: list[dict[str, Any]] | None = None,
    service: str | None = None,
) -> dict[str, Any]:
    default_env = [
        {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": f"{name}-credentials", "key": "password"}}}
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "serviceName": service or name,
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "db",
                            "image": image,
                            "env": default_env if env is None else env,
                            "ports": ports if ports is not None else [{"name": "postgres", "containerPort": 5432}],
                        }
                    ]
                },
            },
        },
        "status": {"replicas": 1, "readyReplicas": ready},
    }


def governing_service(sts: dict[str, Any]) -> dict[str, Any]:
    """The headless Service a StatefulSet's `serviceName` names, as every real database has: the host the
    webhook's defaulting writes, and which it checks exists (webhook.hosts)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": sts["spec"]["serviceName"], "namespace": sts["metadata"]["namespace"]},
        "spec": {"clusterIP": "None", "selector": sts["spec"]["selector"]["matchLabels"], "ports": [{"port": 5432}]},
    }


def admission_review(
    obj: dict[str, Any] | None,
    *,
    operation: str = "CREATE",
    old: dict[str, Any] | None = None,
    kind: dict[str, str] | None = None,
) -> dict[str, Any]:
    namespace = (obj or old or {}).get("metadata", {}).get("namespace", "shop")
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": kind or {"group": GROUP, "version": "v1", "kind": KIND},
            "resource": {"group": GROUP, "version": "v1", "resource": "databasebackups"},
            "operation": operation,
            "namespace": namespace,
            "name": (obj or old or {}).get("metadata", {}).get("name", ""),
            "object": copy.deepcopy(obj),
            "oldObject": copy.deepcopy(old),
        },
    }


def namespace_facts(
    namespace: str = "shop",
    statefulsets: tuple[dict[str, Any], ...] | None = None,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    services: dict[str, dict[str, Any]] | None = None,
    stores: dict[str, dict[str, Any]] | None = None,
) -> NamespaceFacts:
    """The namespace as the reconciler's trust rules see it: by default its database StatefulSet and that one's
    governing Service exist, as in a cluster."""
    found = statefulsets if statefulsets is not None else (statefulset(namespace=namespace),)
    governing = {sts["spec"]["serviceName"]: governing_service(sts) for sts in found}
    return NamespaceFacts(
        namespace,
        labels=labels or {},
        annotations=annotations or {},
        services=governing if services is None else services,
        statefulsets=found,
        stores=stores or {},
    )


def backup_store(
    name: str = "shared",
    *,
    bucket: str = "backups",
    endpoint: str | None = "https://s3.storage.svc:8333",
    prefix: str | None = None,
    selector: dict[str, Any] | None = None,
    **s3: Any,
) -> dict[str, Any]:
    """A BackupStore as the cluster administrators would apply it."""
    spec: dict[str, Any] = {
        "s3": {"bucket": bucket, "credentialsSecret": {"name": "s3-keys"}, **s3},
    }
    if endpoint is not None:
        spec["s3"]["endpoint"] = endpoint
    if prefix is not None:
        spec["prefix"] = prefix
    if selector is not None:
        spec["namespaceSelector"] = selector
    return {"apiVersion": "databases.test.io/v1", "kind": "BackupStore", "metadata": {"name": name}, "spec": spec}


def backup_author_rbac(namespace: str, user: str) -> list[dict[str, Any]]:
    """A Role and RoleBinding for `user`, an author as docs/security.md has them: DatabaseBackups and
    DatabaseRestores, and reading StatefulSets, Services, Pods and Events of the namespace; no Secrets."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "backup-author", "namespace": namespace},
        "rules": [
            {
                "apiGroups": [GROUP],
                "resources": ["databasebackups", "databaserestores"],
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
            },
            {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["services", "pods", "events"], "verbs": ["get", "list"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "backup-author", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "backup-author"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    return [role, binding]


def cached_backup(
    name: str,
    schedule: str = "0 2 * * *",
    *,
    zone: str | None = None,
    suspend: bool = False,
    created: str = "2026-01-01T00:00:00Z",
    **status: Any,
) -> dict[str, Any]:
    """A DatabaseBackup of namespace shop as the reconciler caches it, with `status` as its status: what the
    per-DatabaseBackup metrics read."""
    spec: dict[str, Any] = {"databaseName": "db", "schedule": schedule, "engine": "PostgreSQL", "suspend": suspend}
    if zone is not None:
        spec["timeZone"] = zone
    metadata = {"namespace": "shop", "name": name, "uid": f"uid-{name}", "creationTimestamp": created}
    return {"metadata": metadata, "spec": spec, "status": status}


def page_samples(page: Iterable[bytes]) -> list[Sample]:
    """Every sample of a /metrics page, read by prometheus_client's own parser of the text format (so a page it
    cannot read fails the test)."""
    text = b"".join(page).decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]
