"""What the values of a DatabaseBackup mean: one set of rules for the webhook (at apply time) and the reconciler
(its admission guard, because a webhook can be bypassed or down). Pure functions; no API calls."""

from __future__ import annotations

import functools
from collections.abc import Iterator

from common.backups.model import (
    MAX_QUERY_LENGTH,
    MAX_VERIFY_QUERIES,
    RESOURCE_NAMES,
    DatabaseBackupSpec,
    Resources,
    quantity,
)
from common.constants import BACKUP_ROOT, DEFAULT_TIME_ZONE
from common.fields import FieldError
from common.names import MAX_NAME_LENGTH
from common.schedule import ScheduleError, parse_schedule, parse_time_zone, within_window
from common.values import (
    Engine,
    database_name_problems,
    dns_label_problems,
    dns_subdomain_problems,
    is_host,
    prefix_problems,
    secret_key_problems,
    tls_problems,
    unprintable,
)

__all__ = [
    "default_backup_path",
    "normalize_backup_path",
    "validate",
    "validate_name",
]


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
        yield from dns_label_problems("spec.databaseName", spec.database_name, "a StatefulSet name")
    zone = spec.time_zone or DEFAULT_TIME_ZONE
    try:
        parse_time_zone(zone)
    except ScheduleError as error:
        yield FieldError("spec.timeZone", str(error))
        zone = DEFAULT_TIME_ZONE
    if spec.schedule:
        try:
            schedule = parse_schedule(spec.schedule, zone)
        except ScheduleError as error:
            yield FieldError("spec.schedule", str(error))
        else:
            try:
                within_window(schedule, spec.window, "")
            except ScheduleError as error:
                yield FieldError("spec.window", str(error))
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
        yield from dns_subdomain_problems("spec.connection.credentialsSecret.name", secret.name)
        yield from secret_key_problems("spec.connection.credentialsSecret.usernameKey", secret.username_key)
        yield from secret_key_problems("spec.connection.credentialsSecret.passwordKey", secret.password_key)
    if connection.tls is not None:
        yield from tls_problems(connection.tls, spec.engine, "spec.connection.tls")
    if spec.claim_name is not None:
        yield from dns_subdomain_problems("spec.storage.persistentVolumeClaim.claimName", spec.claim_name)
    if spec.encryption_key:
        yield from dns_subdomain_problems("spec.encryption.keySecret.name", spec.encryption_key.name)
        yield from secret_key_problems("spec.encryption.keySecret.key", spec.encryption_key.key)
    yield from _resources(spec.resources)
    if spec.s3_store is not None:
        yield from dns_subdomain_problems("spec.storage.s3.store", spec.s3_store.store)
        if spec.s3_store.prefix is not None:
            yield from prefix_problems("spec.storage.s3.prefix", spec.s3_store.prefix)
    if spec.verify_image is not None and (not spec.verify_image or unprintable(spec.verify_image)):
        yield FieldError("spec.verify.image", f"{spec.verify_image!r} is not an image reference")


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
        yield from dns_subdomain_problems("spec.verify.queryCredentialsSecret.name", secret.name)
        yield from secret_key_problems("spec.verify.queryCredentialsSecret.usernameKey", secret.username_key)
        yield from secret_key_problems("spec.verify.queryCredentialsSecret.passwordKey", secret.password_key)
    if len(queries) > MAX_VERIFY_QUERIES:
        yield FieldError(where, f"{len(queries)} queries; at most {MAX_VERIFY_QUERIES}")
    databases = spec.connection.databases
    one = databases[0] if len(databases) == 1 and databases[0] != "all" else None
    listed = set(databases) - {"all"}
    seen: set[str] = set()
    for index, query in enumerate(queries):
        at = f"{where}[{index}]"
        yield from dns_label_problems(f"{at}.name", query.name, "a query name")
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
