"""The DatabaseBackupPolicy kind: a cluster administrator's rule that every database StatefulSet in the namespaces
it selects has a DatabaseBackup, made from one template.

    spec:
      namespaceSelector: {matchLabels: {backup: nightly}}   # absent: every namespace the reconciler watches
      selector: {matchLabels: {tier: production}}           # the StatefulSets; absent: every database one
      template:                                             # absent: report only (which databases lack a backup)
        metadata: {labels: {...}, annotations: {...}}
        spec: {schedule: "0 1 * * *", window: 4h, ...}      # a DatabaseBackup's spec, without databaseName

The template is judged by the same rules as a DatabaseBackup's spec at apply time, each error naming its field
under `spec.template.spec`. What only a namespace can tell (its BackupStore access, its claim, the StatefulSet's
credentials) is judged again, by the webhook, when the reconciler creates each DatabaseBackup; a refusal there shows
in the policy's status, naming the database.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from common.backups.model import parse_spec
from common.backups.validation import validate
from common.constants import POLICY_KIND, POLICY_PLURAL
from common.fields import FieldError, Reader, show
from common.selectors import selector_problems

__all__ = ["POLICY_KIND", "POLICY_PLURAL", "PolicySpec", "parse_policy_spec"]

TEMPLATE: Final = "spec.template.spec"
# A name that passes every rule for a StatefulSet's: the template is judged as if it were one database's spec.
_PLACEHOLDER: Final = "database"


@dataclass(frozen=True)
class PolicySpec:
    namespace_selector: Mapping[str, Any] | None = None  # None: every namespace
    selector: Mapping[str, Any] | None = None  # None: every database StatefulSet
    template: Mapping[str, Any] | None = None  # the DatabaseBackup spec without databaseName; None: report only
    labels: Mapping[str, str] = field(default_factory=dict)  # template.metadata
    annotations: Mapping[str, str] = field(default_factory=dict)


def parse_policy_spec(raw: object, path: str = "spec") -> tuple[PolicySpec | None, list[FieldError]]:
    """Read and judge a policy's spec. Returns the spec (None when it cannot be used) and every error."""
    errors: list[FieldError] = []
    if not isinstance(raw, Mapping):
        return None, [FieldError(path, f"must be an object, not {show(raw)}")]
    spec = Reader(raw, path, errors)
    namespaces = spec.mapping("namespaceSelector")
    statefulsets = spec.mapping("selector")
    for selector in (namespaces, statefulsets):
        if selector is not None:
            errors += selector_problems(selector.path, selector.raw)
    template = spec.mapping("template")
    backup: Mapping[str, Any] | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    if template is not None:
        metadata = template.mapping("metadata")
        if metadata is not None:
            labels = _strings(metadata, "labels")
            annotations = _strings(metadata, "annotations")
        body = template.mapping("spec", required=True)
        if body is not None:
            backup = body.raw
            errors += _template_problems(body.raw, body.path)
    parsed = PolicySpec(
        namespace_selector=namespaces.raw if namespaces is not None else None,
        selector=statefulsets.raw if statefulsets is not None else None,
        template=backup,
        labels=labels,
        annotations=annotations,
    )
    return (None, errors) if errors else (parsed, errors)


def _template_problems(raw: Mapping[str, Any], where: str) -> Iterator[FieldError]:
    if "databaseName" in raw:
        yield FieldError(
            f"{where}.databaseName", "is set by the policy, to each StatefulSet it selects: remove it from the template"
        )
        return
    spec, errors = parse_spec({**raw, "databaseName": _PLACEHOLDER}, where)
    yield from errors
    if spec is not None:
        for error in validate(_PLACEHOLDER, spec):
            if error.path == "metadata.name":
                continue  # the policy's DatabaseBackups are named to fit (common.policies.render)
            yield FieldError(where + error.path.removeprefix("spec"), error.message)


def _strings(metadata: Reader, key: str) -> dict[str, str]:
    value = metadata.raw.get(key)
    if value is None:
        return {}
    if not (isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
        metadata.errors.append(FieldError(f"{metadata.path}.{key}", f"must map names to strings, not {show(value)}"))
        return {}
    return dict(value)
