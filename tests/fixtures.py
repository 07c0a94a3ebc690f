"""Objects the tests build: DatabaseBackups, database StatefulSets, AdmissionReviews."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from common.constants import API_VERSION, GROUP, KIND


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
