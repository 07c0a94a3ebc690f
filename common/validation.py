"""What the values of a DatabaseBackup mean: one set of rules for the webhook (at apply time) and the reconciler
(its admission guard, because a webhook can be bypassed or down). Pure functions; no API calls."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterator
from typing import Final

from common.constants import BACKUP_ROOT, DEFAULT_TIME_ZONE
from common.model import (
    MAX_QUERY_LENGTH,
    MAX_VERIFY_QUERIES,
    RESOURCE_NAMES,
    ConfigMapKeyRef,
    DatabaseBackupSpec,
    Engine,
    FieldError,
    Resources,
    SecretKeyRef,
    Tls,
    TlsMode,
    quantity,
)
from common.names import MAX_NAME_LENGTH
from common.schedule import ScheduleError, parse_schedule, parse_time_zone

__all__ = [
    "database_name_problems",
    "default_backup_path",
    "is_host",
    "normalize_backup_path",
    "prefix_problems",
    "tls_problems",
    "validate",
    "validate_name",
]

_DNS_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SECRET_KEY: Final = re.compile(r"[-._a-zA-Z0-9]+")


def default_backup_path(database_name: str) -> str:
    return f"{BACKUP_ROOT}/{database_name}"


def normalize_backup_path(path: str) -> str:
    """`/backups//db/` -> `/backups/db`. Leaves `..` in place, so validation can refuse it by name."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return "/" + "/".join(parts) if path.startswith("/") else "/".join(parts)


@functools.lru_cache(maxsize=4096)
def validate(name: str, spec: DatabaseBackupSpec) -> tuple[FieldError, ...]:
    """Every problem with a parsed spec and its object's name, each naming its field and value. Memoised: the spec
    is a frozen dataclass, and the same objects are judged again on every apply and every reconcile."""
    return (*validate_name(name), *_validate_spec(spec))


def validate_name(name: str) -> Iterator[FieldError]:
    if len(name) > MAX_NAME_LENGTH:
        yield FieldError(
            "metadata.name",
            f'"{name}" is {len(name)} characters; at most {MAX_NAME_LENGTH} leave room for the backup Job names '
            "(<name>-<scheduled minute>)",
        )


def _validate_spec(spec: DatabaseBackupSpec) -> Iterator[FieldError]:
    if spec.database_name:
        yield from _dns_label("spec.databaseName", spec.database_name, "a StatefulSet name")
    zone = spec.time_zone or DEFAULT_TIME_ZONE
    try:
        parse_time_zone(zone)
    except ScheduleError as error:
        yield FieldError("spec.timeZone", str(error))
        zone = DEFAULT_TIME_ZONE
    if spec.schedule:
        try:
            parse_schedule(spec.schedule, zone)
        except ScheduleError as error:
            yield FieldError("spec.schedule", str(error))
    if spec.verify_schedule is not None:
        try:
            parse_schedule(spec.verify_schedule, zone)
        except ScheduleError as error:
            yield FieldError("spec.verify.schedule", str(error))
    if spec.backup_path is not None:
        yield from _backup_path(spec.backup_path)
    yield from _queries(spec)
    connection = spec.connection
    if connection.host is not None and not is_host(connection.host):
        yield FieldError("spec.connection.host", f'"{connection.host}" is not a DNS name or an IP address')
    if connection.username is not None:
        yield from _username(connection.username)
    for index, database in enumerate(connection.databases):
        yield from database_name_problems(f"spec.connection.databases[{index}]", database)
    if connection.credentials_secret:
        secret = connection.credentials_secret
        yield from _dns_subdomain("spec.connection.credentialsSecret.name", secret.name)
        yield from _secret_key("spec.connection.credentialsSecret.usernameKey", secret.username_key)
        yield from _secret_key("spec.connection.credentialsSecret.passwordKey", secret.password_key)
    if connection.tls is not None:
        yield from tls_problems(connection.tls, spec.engine, "spec.connection.tls")
    if spec.claim_name is not None:
        yield from _dns_subdomain("spec.storage.persistentVolumeClaim.claimName", spec.claim_name)
    if spec.encryption_key:
        yield from _dns_subdomain("spec.encryption.keySecret.name", spec.encryption_key.name)
        yield from _secret_key("spec.encryption.keySecret.key", spec.encryption_key.key)
    yield from _resources(spec.resources)
    if spec.s3_store is not None:
        yield from _dns_subdomain("spec.storage.s3.store", spec.s3_store.store)
        if spec.s3_store.prefix is not None:
            yield from prefix_problems("spec.storage.s3.prefix", spec.s3_store.prefix)
    if spec.verify_image is not None and (not spec.verify_image or _unprintable(spec.verify_image)):
        yield FieldError("spec.verify.image", f"{spec.verify_image!r} is not an image reference")


def tls_problems(tls: Tls, engine: Engine | None, where: str) -> Iterator[FieldError]:
    """What is wrong with a `tls` block at `where` (a DatabaseBackup's connection, a DatabaseRestore's target)."""
    if tls.mode is TlsMode.VERIFY_FULL and tls.ca is None:
        yield FieldError(
            f"{where}.ca",
            "is required with mode VerifyFull: the CA that signed the database server's certificate "
            "(secretKeyRef or configMapKeyRef)",
        )
    if tls.mode is not TlsMode.VERIFY_FULL and tls.ca is not None:
        yield FieldError(f"{where}.ca", f"is used only with mode VerifyFull, not {tls.mode}: leave it out")
    if tls.ca is not None:
        yield from _key_ref(f"{where}.ca", tls.ca)
    if tls.require_scram and engine is Engine.MYSQL:
        yield FieldError(f"{where}.requireScram", "true is for PostgreSQL only; the engine is MySQL")


def _key_ref(where: str, ref: SecretKeyRef | ConfigMapKeyRef) -> Iterator[FieldError]:
    """A key of a Secret or a ConfigMap: both names as Kubernetes takes them."""
    path = f"{where}.{'configMapKeyRef' if isinstance(ref, ConfigMapKeyRef) else 'secretKeyRef'}"
    yield from _dns_subdomain(f"{path}.name", ref.name)
    yield from _secret_key(f"{path}.key", ref.key)


def _resources(resources: Resources) -> Iterator[FieldError]:
    values: dict[str, dict[str, float]] = {"requests": {}, "limits": {}}
    for kind, pairs in (("requests", resources.requests), ("limits", resources.limits)):
        for name, text in pairs:
            where = f"spec.resources.{kind}.{name}"
            if name not in RESOURCE_NAMES:
                yield FieldError(where, f'"{name}" is not one of {", ".join(RESOURCE_NAMES)}')
            elif (value := quantity(text)) is None or value <= 0:
                yield FieldError(where, f'"{text}" is not a positive quantity such as 500m, 2, 512Mi or 1Gi')
            else:
                values[kind][name] = value
    for name, request in values["requests"].items():
        limit = values["limits"].get(name)
        if limit is not None and request > limit:
            yield FieldError(f"spec.resources.requests.{name}", f"is above its limit {dict(resources.limits)[name]}")


def _backup_path(path: str) -> Iterator[FieldError]:
    where = "spec.backupPath"
    if not path.startswith("/"):
        yield FieldError(where, f'"{path}" must be an absolute path inside {BACKUP_ROOT}')
        return
    if ".." in path.split("/"):
        yield FieldError(where, f'"{path}" must not contain ".."')
        return
    if any(ord(c) < 32 for c in path):
        yield FieldError(where, f"{path!r} must not contain control characters")
        return
    normal = normalize_backup_path(path)
    if normal != BACKUP_ROOT and not normal.startswith(BACKUP_ROOT + "/"):
        yield FieldError(where, f'"{path}" is outside {BACKUP_ROOT}, where the backup volume is mounted')


def prefix_problems(where: str, prefix: str) -> Iterator[FieldError]:
    """A prefix is a path of object key segments: no `..` or `.` (it would name another part of the bucket), no
    empty segment, no control characters."""
    if not prefix:
        return
    segments = prefix.strip("/").split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        yield FieldError(where, f'"{prefix}" must be segments separated by single "/", none of them "." or ".."')
    elif any(ord(c) < 32 or ord(c) == 127 for c in prefix):
        yield FieldError(where, f"{prefix!r} must not contain control characters")
    elif len(prefix) > 512:
        yield FieldError(where, f"is {len(prefix)} characters; at most 512")


def _username(user: str) -> Iterator[FieldError]:
    where = "spec.connection.username"
    if not user:
        yield FieldError(where, '"" is empty: leave the field out to take the user name from the credentials Secret')
    elif "$(" in user:
        # The kubelet expands $(VAR) in container arguments: a user name must not be able to name another variable.
        yield FieldError(where, f'"{user}" must not contain "$("')
    elif any(ord(c) < 32 or ord(c) == 127 for c in user):
        yield FieldError(where, f"{user!r} must not contain control characters")
    elif len(user.encode()) > 255:
        yield FieldError(where, f'"{user[:40]}…" is longer than 255 bytes')


def _queries(spec: DatabaseBackupSpec) -> Iterator[FieldError]:
    queries = spec.verify_queries
    if not queries:
        return
    where = "spec.verify.queries"
    if spec.engine is Engine.MYSQL:
        yield FieldError(
            where,
            "are for PostgreSQL only; the engine is MySQL, whose dump snapshot (mysqldump --single-transaction) "
            "cannot be shared, so a result recorded beside the dump could differ from the dump",
        )
    if spec.verify_query_credentials is None:
        yield FieldError(
            "spec.verify.queryCredentialsSecret",
            "is required with queries: the Secret of a role that can only read (not a superuser: see "
            "docs/security.md), which the queries run as; they never run with the backup's own credentials",
        )
    else:
        secret = spec.verify_query_credentials
        yield from _dns_subdomain("spec.verify.queryCredentialsSecret.name", secret.name)
        yield from _secret_key("spec.verify.queryCredentialsSecret.usernameKey", secret.username_key)
        yield from _secret_key("spec.verify.queryCredentialsSecret.passwordKey", secret.password_key)
    if len(queries) > MAX_VERIFY_QUERIES:
        yield FieldError(where, f"{len(queries)} queries; at most {MAX_VERIFY_QUERIES}")
    databases = spec.connection.databases
    one = databases[0] if len(databases) == 1 and databases[0] != "all" else None
    listed = set(databases) - {"all"}
    seen: set[str] = set()
    for index, query in enumerate(queries):
        at = f"{where}[{index}]"
        yield from _dns_label(f"{at}.name", query.name, "a query name")
        if query.name in seen:
            yield FieldError(f"{at}.name", f'"{query.name}" names another query too')
        seen.add(query.name)
        if not query.sql.strip():
            yield FieldError(f"{at}.sql", "must not be empty")
        elif len(query.sql) > MAX_QUERY_LENGTH:
            yield FieldError(f"{at}.sql", f"{len(query.sql)} characters; at most {MAX_QUERY_LENGTH}")
        if query.database is not None:
            yield from database_name_problems(f"{at}.database", query.database)
        if query.database is None and one is None:
            yield FieldError(f"{at}.database", "is required: the backup covers several databases, or all")
        elif query.database is not None and listed and "all" not in databases and query.database not in listed:
            shown = ", ".join(sorted(listed))
            yield FieldError(
                f"{at}.database", f'"{query.database}" is not backed up (spec.connection.databases: {shown})'
            )


# Database names reach the clients (pg_dump, psql, mariadb, mariadb-dump) as values: the runner passes them after `--`
# or quoted, and they are held to identifiers here as well, so that none can be read as an option
# (`--init-command=...`) or a connection string (`host=... dbname=...`) by any tool, now or later.
_DATABASE_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_$-]{0,62}")


def database_name_problems(where: str, name: str) -> Iterator[FieldError]:
    if not _DATABASE_NAME.fullmatch(name):
        yield FieldError(
            where,
            f"{_quoted(name)} is not a database name this operator takes: 1 to 63 letters, digits, "
            '"_", "$" and "-", not starting with "-" or "$"',
        )


def _quoted(text: str) -> str:
    shown = text if len(text) <= 60 else text[:57] + "..."
    return f'"{shown}"' if shown.isprintable() else repr(shown)


def _unprintable(text: str) -> bool:
    return any(c.isspace() or not c.isprintable() for c in text)


def _dns_label(where: str, value: str, what: str) -> Iterator[FieldError]:
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        yield FieldError(
            where,
            f'"{value}" is not {what}: at most 63 lower-case letters, digits and "-", starting and ending with a '
            "letter or digit",
        )


def _dns_subdomain(where: str, value: str) -> Iterator[FieldError]:
    labels = value.split(".")
    if len(value) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        yield FieldError(
            where, f'"{value}" is not a valid object name (lower-case letters, digits, "-" and ".", at most 253)'
        )


def _secret_key(where: str, value: str) -> Iterator[FieldError]:
    if len(value) > 253 or not _SECRET_KEY.fullmatch(value):
        yield FieldError(where, f'"{value}" is not a valid Secret key (letters, digits, "-", "_" and ".")')


def is_host(host: str) -> bool:
    """A DNS name or an IP address."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    return len(host) <= 253 and all(re.fullmatch(r"[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?", p) for p in labels)
