"""What a database StatefulSet tells us when the spec is silent: engine, port, host and credentials.

Pure functions of the StatefulSet's JSON. They read the conventions of the images people run: the official
`postgres`, `mysql` and `mariadb` images, Bitnami's, and Percona's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from common.values import Engine
from common.volumes import pod_claims

__all__ = ["Credentials", "DatabaseFacts", "essentials", "facts", "image_engine", "ready_replicas"]

DEFAULT_PORT = {Engine.POSTGRESQL: 5432, Engine.MYSQL: 3306}

# (password variable, user variable or None, the user when the variable is absent), best first: a superuser dumps
# everything (roles, events, routines) that a less privileged account cannot.
_PASSWORD_VARIABLES: dict[Engine, Sequence[tuple[str, str | None, str]]] = {
    Engine.POSTGRESQL: (
        ("POSTGRES_PASSWORD", "POSTGRES_USER", "postgres"),
        ("POSTGRESQL_POSTGRES_PASSWORD", None, "postgres"),
        ("POSTGRESQL_PASSWORD", "POSTGRESQL_USERNAME", "postgres"),
    ),
    Engine.MYSQL: (
        ("MARIADB_ROOT_PASSWORD", None, "root"),
        ("MYSQL_ROOT_PASSWORD", None, "root"),
        ("MARIADB_PASSWORD", "MARIADB_USER", "root"),
        ("MYSQL_PASSWORD", "MYSQL_USER", "root"),
    ),
}


@dataclass(frozen=True)
class Credentials:
    secret: str
    password_key: str
    username_key: str | None  # the user name is in the same Secret
    username: str | None  # ...or is a plain value


@dataclass(frozen=True)
class DatabaseFacts:
    engine: Engine | None
    port: int | None
    host: str | None
    credentials: Credentials | None
    # Why credentials could not be read, for a warning (e.g. a password given literally in the manifest).
    credentials_note: str | None
    image: str | None = None  # the database container's image: a scratch server for restore tests runs it too
    run_as: tuple[int | None, int | None] = (None, None)  # its runAsUser and runAsGroup, if the StatefulSet sets them


def image_engine(image: str) -> Engine | None:
    """`docker.io/bitnami/postgresql:16.2@sha256:...` -> PostgreSQL. The repository's last path part decides."""
    repository = image.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0].lower()
    if "postgres" in repository or repository in ("pgvector", "postgis", "timescaledb"):
        return Engine.POSTGRESQL
    if any(word in repository for word in ("mysql", "mariadb", "percona")):
        return Engine.MYSQL
    return None


def ready_replicas(statefulset: Mapping[str, Any]) -> int:
    value = (statefulset.get("status") or {}).get("readyReplicas") or 0
    return int(value) if isinstance(value, int) else 0


_FACTS_CACHE: dict[tuple[str, str, str], DatabaseFacts] = {}
_FACTS_CACHE_SIZE = 4096


def facts(statefulset: Mapping[str, Any], namespace: str) -> DatabaseFacts:
    """Memoised per StatefulSet version: an object with a uid and resourceVersion never changes."""
    metadata = statefulset.get("metadata") or {}
    uid, version = metadata.get("uid"), metadata.get("resourceVersion")
    if not (isinstance(uid, str) and isinstance(version, str)):
        return _facts(statefulset, namespace)
    key = (uid, version, namespace)
    found = _FACTS_CACHE.get(key)
    if found is None:
        if len(_FACTS_CACHE) >= _FACTS_CACHE_SIZE:
            _FACTS_CACHE.pop(next(iter(_FACTS_CACHE)))  # oldest first: dicts keep insertion order
        found = _FACTS_CACHE[key] = _facts(statefulset, namespace)
    return found


def _facts(statefulset: Mapping[str, Any], namespace: str) -> DatabaseFacts:
    spec = statefulset.get("spec") or {}
    containers = list(((spec.get("template") or {}).get("spec") or {}).get("containers") or [])
    container, engine = _database_container(containers)
    service = spec.get("serviceName")
    host = f"{service}.{namespace}.svc" if isinstance(service, str) and service else None
    if container is None or engine is None:
        return DatabaseFacts(engine, None, host, None, None)
    credentials, note = _credentials(container, engine)
    pod = (spec.get("template") or {}).get("spec") or {}
    run_as = _run_as(container.get("securityContext"), pod.get("securityContext"))
    image = str(container.get("image") or "") or None
    return DatabaseFacts(engine, _port(container, engine), host, credentials, note, image, run_as)


def _run_as(container: object, pod: object) -> tuple[int | None, int | None]:
    """The user and group the database runs as: the container's setting, else the Pod's."""
    found: list[int | None] = []
    for key in ("runAsUser", "runAsGroup"):
        value = None
        for context in (container, pod):
            if isinstance(context, Mapping) and isinstance(context.get(key), int):
                value = int(context[key])
                break
        found.append(value)
    return found[0], found[1]


def _database_container(containers: list[Any]) -> tuple[Mapping[str, Any] | None, Engine | None]:
    for container in containers:
        if isinstance(container, Mapping):
            engine = image_engine(str(container.get("image") or ""))
            if engine is not None:
                return container, engine
    return None, None


def _port(container: Mapping[str, Any], engine: Engine) -> int:
    ports = [p for p in container.get("ports") or [] if isinstance(p, Mapping)]
    standard = DEFAULT_PORT[engine]
    numbers = [p.get("containerPort") for p in ports if isinstance(p.get("containerPort"), int)]
    if standard in numbers or not numbers:
        return standard
    for port in ports:
        if str(port.get("name", "")).lower() in ("postgres", "postgresql", "mysql", "mariadb", "db", "sql"):
            return int(port["containerPort"])
    return int(numbers[0])  # type: ignore[arg-type]


def _credentials(container: Mapping[str, Any], engine: Engine) -> tuple[Credentials | None, str | None]:
    env = {e["name"]: e for e in container.get("env") or [] if isinstance(e, Mapping) and "name" in e}
    env_from = [
        str(source["secretRef"]["name"])
        for source in container.get("envFrom") or []
        if isinstance(source, Mapping)
        and isinstance(source.get("secretRef"), Mapping)
        and source.get("secretRef", {}).get("name")
        and not source.get("prefix")
    ]
    for password_variable, user_variable, default_user in _PASSWORD_VARIABLES[engine]:
        entry = env.get(password_variable)
        reference = _secret_key_ref(entry)
        if entry is not None and reference is None:
            return None, (
                f"the database container sets {password_variable} without a Secret; put the password in a Secret "
                "and name it in spec.connection.credentialsSecret"
            )
        if reference is None and env_from and entry is None and user_variable is None:
            # envFrom a Secret: its keys are the variable names. Only trusted for variables with a fixed user.
            reference = (env_from[0], password_variable)
        if reference is None:
            continue
        secret, password_key = reference
        user_entry = env.get(user_variable) if user_variable else None
        user_reference = _secret_key_ref(user_entry)
        if user_reference is not None and user_reference[0] == secret:
            return Credentials(secret, password_key, user_reference[1], None), None
        literal = user_entry.get("value") if isinstance(user_entry, Mapping) else None
        return Credentials(secret, password_key, None, str(literal) if literal else default_user), None
    return None, None


def _secret_key_ref(entry: Mapping[str, Any] | None) -> tuple[str, str] | None:
    if not isinstance(entry, Mapping):
        return None
    reference = (entry.get("valueFrom") or {}).get("secretKeyRef")
    if isinstance(reference, Mapping) and reference.get("name") and reference.get("key"):
        return str(reference["name"]), str(reference["key"])
    return None


def essentials(statefulset: dict[str, Any]) -> dict[str, Any]:
    """What the operator reads of a StatefulSet, for a cache to keep: every reader of `facts` must cache this same
    shape, because `facts` is memoised per uid and resourceVersion (a slimmer copy would answer for the whole one)."""
    spec = statefulset.get("spec") or {}
    template = spec.get("template") or {}
    pod = template.get("spec") or {}
    return {
        "metadata": statefulset.get("metadata") or {},
        "spec": {
            "serviceName": spec.get("serviceName"),
            # The data volumes a backup claim must not be (common.volumes).
            "volumeClaimTemplates": [
                {"metadata": {"name": (t.get("metadata") or {}).get("name")}}
                for t in spec.get("volumeClaimTemplates") or []
            ],
            "template": {
                "spec": {
                    "securityContext": pod.get("securityContext"),
                    "containers": [
                        {k: c.get(k) for k in ("name", "image", "env", "envFrom", "ports", "securityContext") if k in c}
                        for c in pod.get("containers") or []
                    ],
                    # Their images may run as a restore test's scratch server (common.images).
                    "initContainers": [{"image": c.get("image")} for c in pod.get("initContainers") or []],
                    "volumes": [{"persistentVolumeClaim": {"claimName": c}} for c in pod_claims(template)],
                }
            },
        },
        "status": {"readyReplicas": (statefulset.get("status") or {}).get("readyReplicas")},
    }
