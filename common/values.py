"""The values that several kinds share, with how each is read and what makes one wrong: the engine, a Secret or
ConfigMap key, a credentials Secret, a `tls` block, an S3 location, object and database names, hosts."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from common.fields import FieldError, Reader, or_default

__all__ = [
    "ConfigMapKeyRef",
    "CredentialsSecret",
    "Engine",
    "S3Credentials",
    "S3Storage",
    "SecretKeyRef",
    "ServerSideEncryption",
    "StoreReference",
    "Tls",
    "TlsMode",
    "database_name_problems",
    "dns_label_problems",
    "dns_subdomain_problems",
    "is_host",
    "key_ref_problems",
    "prefix_problems",
    "quoted",
    "read_credentials",
    "read_key_ref",
    "read_tls",
    "secret_key_problems",
    "tls_problems",
    "unprintable",
]


class Engine(StrEnum):
    POSTGRESQL = "PostgreSQL"
    MYSQL = "MySQL"  # MariaDB too


class TlsMode(StrEnum):
    DISABLE = "Disable"
    REQUIRE = "Require"  # encrypted, the certificate not checked
    VERIFY_FULL = "VerifyFull"  # encrypted, the certificate signed by `ca` and naming the host


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str


@dataclass(frozen=True)
class CredentialsSecret:
    name: str
    username_key: str = "username"
    password_key: str = "password"  # noqa: S105 - the name of a key in the Secret, not a password


@dataclass(frozen=True)
class ConfigMapKeyRef:
    name: str
    key: str


@dataclass(frozen=True)
class Tls:
    """`connection.tls`. Absent (None on Connection), the clients keep their own defaults; given, `mode` defaults
    to VerifyFull, the only mode that keeps the password from a server that is not the database."""

    mode: TlsMode = TlsMode.VERIFY_FULL
    ca: SecretKeyRef | ConfigMapKeyRef | None = None
    require_scram: bool = False


class ServerSideEncryption(StrEnum):
    AES256 = "AES256"
    KMS = "aws:kms"


@dataclass(frozen=True)
class S3Credentials:
    """The Secret holding the access key pair; its keys default to the AWS variables' names."""

    name: str
    access_key_id_key: str = "AWS_ACCESS_KEY_ID"
    secret_access_key_key: str = "AWS_SECRET_ACCESS_KEY"  # noqa: S105 - the name of a key, not a secret


@dataclass(frozen=True)
class StoreReference:
    """`spec.storage.s3`: the BackupStore (cluster-scoped, the administrators') that backups go to, and a prefix
    below the namespace's own part of it (common.stores)."""

    store: str
    prefix: str | None = None  # defaulted to <databaseName>


@dataclass(frozen=True)
class S3Storage:
    """Where a DatabaseBackup's Jobs stream backups: its store's settings with the whole prefix
    (`<store prefix>/<namespace>/<own prefix>`), as common.stores.access.resolve_store makes it. Never read from a
    DatabaseBackup's spec: its author names only the store and a prefix below the namespace's part."""

    bucket: str
    prefix: str | None = None
    endpoint: str | None = None  # None: AWS
    region: str | None = None
    force_path_style: bool = False
    allow_insecure: bool = False  # an http:// endpoint
    credentials_secret: S3Credentials | None = None
    ca_bundle: str | None = None  # PEM
    server_side_encryption: ServerSideEncryption | None = None
    kms_key_id: str | None = None
    store: str | None = None  # the BackupStore it came from


def read_tls(tls: Reader | None) -> Tls | None:
    if tls is None:
        return None
    return Tls(
        mode=or_default(tls.enum("mode", TlsMode), Tls.mode),
        ca=read_key_ref(tls.mapping("ca")),
        require_scram=or_default(tls.boolean("requireScram"), Tls.require_scram),
    )


def read_key_ref(ref: Reader | None) -> SecretKeyRef | ConfigMapKeyRef | None:
    """`{secretKeyRef: {name, key}}` or `{configMapKeyRef: {name, key}}`: exactly one."""
    if ref is None:
        return None
    refs = {key: ref.mapping(key) for key in ("secretKeyRef", "configMapKeyRef")}
    given = {key: found for key, found in refs.items() if found is not None}
    if len(given) != 1:
        ref.errors.append(FieldError(ref.path, "must name exactly one of secretKeyRef or configMapKeyRef"))
        return None
    [(kind, found)] = given.items()
    name, item = found.string("name", required=True), found.string("key", required=True)
    if name is None or item is None:
        return None
    return SecretKeyRef(name, item) if kind == "secretKeyRef" else ConfigMapKeyRef(name, item)


def read_credentials(secret: Reader | None) -> CredentialsSecret | None:
    """A `{name, usernameKey, passwordKey}` Secret reference."""
    if secret is None:
        return None
    name = secret.string("name", required=True)
    if name is None:
        return None
    return CredentialsSecret(
        name=name,
        username_key=secret.string("usernameKey") or "username",
        password_key=secret.string("passwordKey") or "password",
    )


_DNS_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


_SECRET_KEY: Final = re.compile(r"[-._a-zA-Z0-9]+")


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
        yield from key_ref_problems(f"{where}.ca", tls.ca)
    if tls.require_scram and engine is Engine.MYSQL:
        yield FieldError(f"{where}.requireScram", "true is for PostgreSQL only; the engine is MySQL")


def key_ref_problems(where: str, ref: SecretKeyRef | ConfigMapKeyRef) -> Iterator[FieldError]:
    """A key of a Secret or a ConfigMap: both names as Kubernetes takes them."""
    path = f"{where}.{'configMapKeyRef' if isinstance(ref, ConfigMapKeyRef) else 'secretKeyRef'}"
    yield from dns_subdomain_problems(f"{path}.name", ref.name)
    yield from secret_key_problems(f"{path}.key", ref.key)


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


# Database names reach the clients (pg_dump, psql, mariadb, mariadb-dump) as values: the runner passes them after `--`
# or quoted, and they are held to identifiers here as well, so that none can be read as an option
# (`--init-command=...`) or a connection string (`host=... dbname=...`) by any tool, now or later.
_DATABASE_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_$-]{0,62}")


def database_name_problems(where: str, name: str) -> Iterator[FieldError]:
    if not _DATABASE_NAME.fullmatch(name):
        yield FieldError(
            where,
            f"{quoted(name)} is not a database name this operator takes: 1 to 63 letters, digits, "
            '"_", "$" and "-", not starting with "-" or "$"',
        )


def quoted(text: str) -> str:
    shown = text if len(text) <= 60 else text[:57] + "..."
    return f'"{shown}"' if shown.isprintable() else repr(shown)


def unprintable(text: str) -> bool:
    return any(c.isspace() or not c.isprintable() for c in text)


def dns_label_problems(where: str, value: str, what: str) -> Iterator[FieldError]:
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        yield FieldError(
            where,
            f'"{value}" is not {what}: at most 63 lower-case letters, digits and "-", starting and ending with a '
            "letter or digit",
        )


def dns_subdomain_problems(where: str, value: str) -> Iterator[FieldError]:
    labels = value.split(".")
    if len(value) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        yield FieldError(
            where, f'"{value}" is not a valid object name (lower-case letters, digits, "-" and ".", at most 253)'
        )


def secret_key_problems(where: str, value: str) -> Iterator[FieldError]:
    if len(value) > 253 or not _SECRET_KEY.fullmatch(value):
        yield FieldError(where, f'"{value}" is not a valid Secret key (letters, digits, "-", "_" and ".")')
    elif value in (".", "..") or value.startswith(".."):
        # As the API server refuses them in a Secret: a Secret volume keeps its own bookkeeping under "..".
        yield FieldError(where, f'"{value}" is not a valid Secret key (it may not be "." or start with "..")')


def is_host(host: str) -> bool:
    """A DNS name or an IP address."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    return len(host) <= 253 and all(re.fullmatch(r"[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?", p) for p in labels)
