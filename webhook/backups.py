"""Admission for DatabaseBackups, as plain functions: an AdmissionReview dict (and what the caller found out about
the database StatefulSet) in, an AdmissionResponse dict out. No HTTP here (the server decodes, calls, encodes) and
no API calls (the caller looks the StatefulSet up first, so these stay pure and testable).

A malformed DatabaseBackup is an answer too: a denial that names each field and value; otherwise an admission with
warnings and a patch. (A body that is no AdmissionReview at all is `reviews.BadReview`, a 400.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from common.backups.defaults import default_claim_name, default_spec
from common.backups.model import parse_spec
from common.backups.validation import validate
from common.constants import ANNOTATION_SKIP_DATABASE_CHECK, KIND
from common.fields import FieldError, join_errors
from common.hosts import HostFacts, host_refusal
from common.images import image_refusal
from common.statefulset import facts, ready_replicas
from common.stores.access import resolve_store
from common.stores.model import STORE_FIELD
from common.values import StoreReference
from common.volumes import claim_refusal
from webhook.patch import patched_spec
from webhook.reviews import AdmissionRequest, AdmissionResponse, StoreFacts, denied, unjudgeable

__all__ = [
    "CLAIM_FIELD",
    "Database",
    "ImageFacts",
    "backup_claim",
    "database_to_check",
    "host_to_check",
    "image_to_check",
    "mutate",
    "store_of",
    "store_to_check",
    "validate_request",
]

CLAIM_FIELD = "spec.storage.persistentVolumeClaim.claimName"
HOST_FIELD = "spec.connection.host"
IMAGE_FIELD = "spec.verify.image"

WARNING_LIMIT = 120  # the API server passes warnings on to kubectl; long ones are truncated there


@dataclass(frozen=True)
class Database:
    """What the caller found about the StatefulSet named by spec.databaseName, and about every StatefulSet of the
    namespace and their Pods (whose data volumes a backup claim must not be)."""

    namespace: str
    name: str
    statefulset: Mapping[str, Any] | None  # None: not found
    error: str | None = None  # the lookup itself failed (e.g. the API server did not answer)
    statefulsets: tuple[Mapping[str, Any], ...] | None = None  # every StatefulSet of the namespace; None: unread
    pods: Mapping[str, tuple[str, ...]] | None = None  # the claims each StatefulSet Pod mounts, by Pod; None: unread
    volumes_error: str | None = None  # reading the StatefulSets or Pods of the namespace failed


@dataclass(frozen=True)
class ImageFacts:
    """`spec.verify.image`, the database StatefulSet's images and the namespace's approved ones (common.images)."""

    image: str
    statefulset: Mapping[str, Any] | None = None
    annotations: Mapping[str, str] | None = None
    error: str | None = None  # a lookup failed


def database_to_check(request: AdmissionRequest) -> tuple[str, str] | None:
    """(namespace, StatefulSet name) when validation needs the database: on create, and on an update that changes
    databaseName (does it exist?) or the backup claim (is it the database's data?). Other updates pass, so that a
    backup whose database is gone can still be suspended, relabelled or deleted."""
    if request.get("operation") not in ("CREATE", "UPDATE") or _problem(request) is not None:
        return None
    name = _spec_of(request.get("object") or {}).get("databaseName")
    if not isinstance(name, str) or not name:
        return None
    if request["operation"] == "UPDATE" and not _renamed(request) and not _claim_changed(request):
        return None
    return _namespace(request), name


def host_to_check(request: AdmissionRequest) -> str | None:
    """`spec.connection.host` when validation must judge it: on create, and on an update that changes it."""
    if request.get("operation") not in ("CREATE", "UPDATE") or _problem(request) is not None:
        return None
    host = _host(_spec_of(request.get("object") or {}))
    if host is None or (request["operation"] == "UPDATE" and not _changed(request, _host)):
        return None
    return host


def _host(spec: Mapping[str, Any]) -> str | None:
    connection = spec.get("connection")
    host = connection.get("host") if isinstance(connection, Mapping) else None
    return host if isinstance(host, str) and host else None


def backup_claim(spec: Mapping[str, Any]) -> str | None:
    """The claim a backup Job will mount: the one named, or the default when `storage` is left out."""
    storage = spec.get("storage")
    if storage is None:
        database = spec.get("databaseName")
        return default_claim_name(database) if isinstance(database, str) and database else None
    claim = (storage.get("persistentVolumeClaim") or {}) if isinstance(storage, Mapping) else None
    name = claim.get("claimName") if isinstance(claim, Mapping) else None
    return name if isinstance(name, str) and name else None


def store_to_check(request: AdmissionRequest) -> str | None:
    """The BackupStore named by `spec.storage.s3.store`, on create and on an update that changes it."""
    if request.get("operation") not in ("CREATE", "UPDATE") or _problem(request) is not None:
        return None
    store = store_of(_spec_of(request.get("object") or {}))
    return store if store is not None and _changed(request, store_of) else None


def image_to_check(request: AdmissionRequest) -> tuple[str, str] | None:
    """(`spec.verify.image`, the database StatefulSet) on create and on an update that changes either."""
    if request.get("operation") not in ("CREATE", "UPDATE") or _problem(request) is not None:
        return None
    spec = _spec_of(request.get("object") or {})
    image, database = _image(spec), spec.get("databaseName")
    if image is None or not isinstance(database, str) or not database:
        return None
    if not (_changed(request, _image) or _renamed(request)):
        return None
    return image, database


def store_of(spec: Mapping[str, Any]) -> str | None:
    storage = spec.get("storage")
    s3 = storage.get("s3") if isinstance(storage, Mapping) else None
    store = s3.get("store") if isinstance(s3, Mapping) else None
    return store if isinstance(store, str) and store else None


def _image(spec: Mapping[str, Any]) -> str | None:
    verify = spec.get("verify")
    image = verify.get("image") if isinstance(verify, Mapping) else None
    return image if isinstance(image, str) and image else None


def validate_request(
    request: AdmissionRequest,
    database: Database | None,
    host: HostFacts | None = None,
    *,
    store: StoreFacts | None = None,
    image: ImageFacts | None = None,
) -> AdmissionResponse:
    """Judge a DatabaseBackup with what the caller looked up; each lookup is given only when that part needs judging
    (database_to_check, host_to_check, store_to_check, image_to_check). A lookup that failed refuses: these are the
    rules that keep credentials and data where they belong, and the user can simply apply again."""
    uid = request["uid"]
    problem = _problem(request)
    if problem is not None:
        return denied(uid, problem)
    if request.get("operation") not in ("CREATE", "UPDATE"):
        return {"uid": uid, "allowed": True}
    obj = cast(dict[str, Any], request.get("object"))
    spec, errors = parse_spec(obj.get("spec"))
    name = _object_name(obj, request)
    if spec is not None:
        errors.extend(validate(name, spec))
    warnings: list[str] = []
    if database is not None:
        _check_database(
            obj, database, errors, warnings, existence=request.get("operation") == "CREATE" or _renamed(request)
        )
    if host is not None and (refused := host_refusal(host)) is not None:
        errors.append(FieldError(HOST_FIELD, refused))
    if store is not None and spec is not None and spec.s3_store is not None:
        errors += _store_refusals(spec.s3_store, _namespace(request), spec.database_name, store)
    if image is not None and (refused := _image_refusal(image)) is not None:
        errors.append(FieldError(IMAGE_FIELD, refused))
    if errors:
        return denied(uid, join_errors(errors))
    if spec is not None:
        warnings += _advice(obj)
    return _allowed(uid, warnings)


def mutate(request: AdmissionRequest, statefulset: Mapping[str, Any] | None) -> AdmissionResponse:
    """Fill in the defaults the operator decides (see common.backups.defaults) as a JSONPatch. Idempotent: run on
    its own output it patches nothing. A malformed object passes unchanged; validation denies it with the reasons."""
    uid = request["uid"]
    if _problem(request) is not None or request.get("operation") not in ("CREATE", "UPDATE"):
        return {"uid": uid, "allowed": True}
    obj = cast(dict[str, Any], request.get("object"))
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        return {"uid": uid, "allowed": True}
    return patched_spec(uid, spec, default_spec(spec, namespace=_namespace(request), statefulset=statefulset))


# --- helpers ------------------------------------------------------------------------------------------------


def _problem(request: AdmissionRequest) -> str | None:
    return unjudgeable(request, KIND, ("CREATE", "UPDATE"))


def _check_database(
    obj: Mapping[str, Any], database: Database, errors: list[FieldError], warnings: list[str], *, existence: bool
) -> None:
    where = f'StatefulSet "{database.name}"'
    if database.error is not None:
        errors.append(FieldError("spec.databaseName", _retry(f"could not check {where}: {database.error}")))
        return
    _check_claim(obj, database, errors)
    if database.statefulset is None and not existence:
        return  # only the claim changed, and there is no database to read defaults from
    if database.statefulset is None:
        message = f'{where} not found in namespace "{database.namespace}"'
        if _skips_database_check(obj):
            warnings.append(_short(f"spec.databaseName: {message} (allowed: {ANNOTATION_SKIP_DATABASE_CHECK})"))
        else:
            errors.append(FieldError("spec.databaseName", message))
        return
    statefulset = database.statefulset
    if ready_replicas(statefulset) == 0:
        warnings.append(_short(f"spec.databaseName: {where} has no ready replica; backups fail until it has one"))
    found = facts(statefulset, database.namespace)
    spec = _spec_of(obj)
    engine = spec.get("engine")
    if found.engine is not None and isinstance(engine, str) and engine != found.engine:
        warnings.append(_short(f"spec.engine: {engine}, but {where} runs a {found.engine} image"))
    if found.engine is None and engine is None:
        warnings.append(_short(f"spec.engine: not set, and the image of {where} does not say; set it"))
    connection = spec.get("connection")
    if found.credentials_note and not (isinstance(connection, Mapping) and "credentialsSecret" in connection):
        warnings.append(_short(f"spec.connection.credentialsSecret: {found.credentials_note}"))


def _check_claim(obj: Mapping[str, Any], database: Database, errors: list[FieldError]) -> None:
    """The backup claim must not be the data of any StatefulSet of the namespace: a backup Job mounts it read-write
    (common.volumes)."""
    claim = backup_claim(_spec_of(obj))
    if claim is None:
        return
    if database.volumes_error is not None:
        message = (
            f'could not read the StatefulSets and Pods of namespace "{database.namespace}": {database.volumes_error}'
        )
        errors.append(FieldError(CLAIM_FIELD, _retry(message)))
        return
    statefulsets = list(database.statefulsets or ())
    if database.statefulset is not None and database.statefulset not in statefulsets:
        statefulsets.append(database.statefulset)
    reason = claim_refusal(claim, statefulsets, database.pods)
    if reason is not None:
        errors.append(FieldError(CLAIM_FIELD, reason))


def _store_refusals(reference: StoreReference, namespace: str, database: str, store: StoreFacts) -> list[FieldError]:
    if store.error is not None:
        return [FieldError(STORE_FIELD, _retry(f'could not read BackupStore "{store.name}": {store.error}'))]
    _, refusals = resolve_store(
        reference,
        namespace=namespace,
        namespace_labels=store.labels or {},
        database_name=database,
        store=store.found,
    )
    return refusals


def _image_refusal(image: ImageFacts) -> str | None:
    if image.error is not None:
        return _retry(f'could not check "{image.image}": {image.error}')
    return image_refusal(image.image, image.statefulset, image.annotations or {})


def _retry(message: str) -> str:
    return f"{message}; nothing was changed: try again"


def _renamed(request: AdmissionRequest) -> bool:
    return _changed(request, lambda spec: spec.get("databaseName"))


def _claim_changed(request: AdmissionRequest) -> bool:
    return _changed(request, backup_claim)


def _changed(request: AdmissionRequest, field: Callable[[Mapping[str, Any]], Any]) -> bool:
    """Whether an update changes what `field` reads from the spec (a create changes everything)."""
    if request.get("operation") != "UPDATE":
        return True
    old = request.get("oldObject")
    if not isinstance(old, Mapping) or not isinstance(old.get("spec"), Mapping):
        return True
    return bool(field(_spec_of(old)) != field(_spec_of(request.get("object") or {})))


def _advice(obj: Mapping[str, Any]) -> list[str]:
    connection = _spec_of(obj).get("connection") or {}
    if isinstance(connection, Mapping) and "credentialsSecret" not in connection:
        return ["spec.connection.credentialsSecret: not set and not found on the StatefulSet; backups will fail"]
    return []


def _spec_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _skips_database_check(obj: Mapping[str, Any]) -> bool:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return isinstance(annotations, Mapping) and annotations.get(ANNOTATION_SKIP_DATABASE_CHECK) == "true"


def _namespace(request: AdmissionRequest) -> str:
    obj = request.get("object") or {}
    return str(request.get("namespace") or (obj.get("metadata") or {}).get("namespace") or "")


def _object_name(obj: Mapping[str, Any], request: AdmissionRequest) -> str:
    metadata = obj.get("metadata") or {}
    name = metadata.get("name") or request.get("name")
    if name:
        return str(name)
    # generateName: the API server appends 5 characters.
    return f"{metadata.get('generateName') or ''}xxxxx"


def _allowed(uid: str, warnings: list[str]) -> AdmissionResponse:
    response: AdmissionResponse = {"uid": uid, "allowed": True}
    if warnings:
        response["warnings"] = warnings
    return response


def _short(text: str) -> str:
    return text if len(text) <= WARNING_LIMIT else text[: WARNING_LIMIT - 1] + "…"
