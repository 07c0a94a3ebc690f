"""What DatabaseBackupPolicies ask for, decided from the caches in one pass over every policy: the DatabaseBackups
to create, write again and delete, and each policy's status. Pure: the policy controller applies the plan.

The rules, per database StatefulSet (one the reconciler recognises as PostgreSQL or MySQL/MariaDB):
- A DatabaseBackup written by hand for it (any without the policy label) wins: no policy keeps one of its own, and
  a policy's that exists is deleted. The policies that select the database count it as covered by hand.
- Otherwise the oldest policy with a template that selects it (by creationTimestamp, then name) keeps one
  DatabaseBackup for it, named `<statefulset>-<policy>`; the others count it as covered by that policy.
- A DatabaseBackup a policy made that no policy keeps any more (the StatefulSet went, stopped matching, the policy
  was deleted or lost its template) is deleted. Its stored backups stay, as with any deleted DatabaseBackup.
- A policy that cannot be read (it passed no webhook) changes nothing that exists, and says why in its status.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from common.backups.model import Phase
from common.policies.model import PolicySpec, parse_policy_spec
from common.policies.render import ANNOTATION_TEMPLATE, backup_name, digest, made_by, render
from common.selectors import selector_matches
from common.statefulset import facts

__all__ = ["PolicyPlan", "plan"]

MAX_LISTED: Final = 50  # databases named in a policy's status; the counts cover every one
_FAILING: Final = (Phase.FAILED.value, Phase.INVALID.value)

Database = tuple[str, str]  # (namespace, StatefulSet)


@dataclass
class PolicyPlan:
    create: list[dict[str, Any]] = field(default_factory=list)
    # (the DatabaseBackup as the policy writes it, the stored one's resourceVersion)
    update: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    delete: list[tuple[str, str]] = field(default_factory=list)
    status: dict[str, dict[str, Any]] = field(default_factory=dict)  # policy name -> its status
    # (namespace, StatefulSet) -> the policy that keeps its DatabaseBackup
    owners: dict[Database, str] = field(default_factory=dict)


@dataclass
class _Policy:
    obj: Mapping[str, Any]
    name: str
    spec: PolicySpec | None
    problem: str | None
    selected: list[Database] = field(default_factory=list)


def plan(
    policies: Iterable[Mapping[str, Any]],
    namespaces: Mapping[str, Mapping[str, str]],
    statefulsets: Iterable[Mapping[str, Any]],
    backups: Iterable[Mapping[str, Any]],
    refused: Mapping[Database, str],
) -> PolicyPlan:
    """`namespaces`: each watched namespace's labels. `refused`: the databases whose DatabaseBackup the API server
    (the webhook) refused to create, with its message."""
    result = PolicyPlan()
    parsed = sorted((_read(p) for p in policies), key=lambda p: (_created(p.obj), p.name))
    databases = [
        (namespace, name, labels)
        for namespace, name, labels, sts in _statefulsets(statefulsets)
        if namespace in namespaces and facts(sts, namespace).engine is not None
    ]
    for policy in parsed:
        if policy.spec is None:
            continue
        for namespace, name, labels in databases:
            if selector_matches(policy.spec.namespace_selector, namespaces[namespace]) and selector_matches(
                policy.spec.selector, labels
            ):
                policy.selected.append((namespace, name))

    by_hand: dict[Database, list[Mapping[str, Any]]] = defaultdict(list)
    ours: dict[tuple[str, str], Mapping[str, Any]] = {}  # (namespace, DatabaseBackup name) -> a policy's
    names_taken: dict[tuple[str, str], Mapping[str, Any]] = {}
    for backup in backups:
        metadata = backup.get("metadata") or {}
        namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
        names_taken[(namespace, name)] = backup
        database = (backup.get("spec") or {}).get("databaseName")
        if made_by(backup) is None:
            if isinstance(database, str):
                by_hand[(namespace, database)].append(backup)
        else:
            ours[(namespace, name)] = backup

    kept: set[tuple[str, str]] = set()
    unreadable = {p.name for p in parsed if p.spec is None}
    for policy in parsed:
        if policy.spec is None or policy.spec.template is None:
            continue
        template = digest(policy.spec)
        for database in policy.selected:
            if database in by_hand or database in result.owners:
                continue
            result.owners[database] = policy.name
            namespace, statefulset = database
            wanted = render(policy.obj, policy.spec, namespace, statefulset, template)
            key = (namespace, wanted["metadata"]["name"])
            stored = names_taken.get(key)
            if stored is None:
                if database not in refused:
                    result.create.append(wanted)
                continue
            if made_by(stored) != policy.name:
                continue  # the name is another's: reported below
            kept.add(key)
            annotations = (stored.get("metadata") or {}).get("annotations") or {}
            if annotations.get(ANNOTATION_TEMPLATE) != template:
                version = str((stored.get("metadata") or {}).get("resourceVersion") or "")
                result.update.append((wanted, version))
    for key, backup in sorted(ours.items()):
        if key not in kept and made_by(backup) not in unreadable:
            result.delete.append(key)

    for policy in parsed:
        result.status[policy.name] = _status(policy, result.owners, by_hand, names_taken, refused)
    return result


def _status(
    policy: _Policy,
    owners: Mapping[Database, str],
    by_hand: Mapping[Database, list[Mapping[str, Any]]],
    names_taken: Mapping[tuple[str, str], Mapping[str, Any]],
    refused: Mapping[Database, str],
) -> dict[str, Any]:
    generation = (policy.obj.get("metadata") or {}).get("generation")
    if policy.spec is None:
        return {
            "observedGeneration": generation,
            "conditions": [_ready(False, "Invalid", policy.problem or "")],
        }
    covered = hand = failing = 0
    listed: list[tuple[int, dict[str, Any]]] = []  # (order, entry): the unprotected first, then failing, then the rest
    for database in policy.selected:
        namespace, statefulset = database
        entry: dict[str, Any] = {"namespace": namespace, "statefulset": statefulset}
        backups: list[Mapping[str, Any]]
        if database in by_hand:
            backups, hand = by_hand[database], hand + 1
            entry["coveredBy"] = "Hand"
        elif database in owners:
            owner = owners[database]
            found = names_taken.get((namespace, backup_name(statefulset, owner)))
            backups = [found] if found is not None and made_by(found) == owner else []
            if owner != policy.name:
                entry["coveredBy"] = f"Policy {owner}"
            if found is not None and made_by(found) != owner:
                entry["problem"] = f'a DatabaseBackup "{backup_name(statefulset, owner)}" written by hand has the name'
        else:
            backups = []
        if database in refused and not backups:
            entry["problem"] = refused[database]
        active = [b for b in backups if not (b.get("spec") or {}).get("suspend")]
        if backups:
            entry["databaseBackup"] = str((backups[0].get("metadata") or {}).get("name") or "")
        bad = [b for b in backups if _failing(b)]
        if active:
            covered += 1
        if bad or "problem" in entry:
            failing += 1
            if bad and "problem" not in entry:
                status = bad[0].get("status") or {}
                entry["problem"] = str(
                    (status.get("lastFailure") or {}).get("message") or status.get("phase") or "failing"
                )[:300]
        if not active:
            entry.setdefault("problem", "suspended" if backups else "no DatabaseBackup")
            listed.append((0, entry))
        elif "problem" in entry:
            listed.append((1, entry))
        elif "coveredBy" in entry:
            listed.append((2, entry))
    selected = len(policy.selected)
    unprotected = selected - covered
    if policy.spec.template is None:
        ready = _ready(unprotected == 0, "ReportOnly", f"{unprotected} of {selected} selected databases unprotected")
    elif unprotected or failing:
        ready = _ready(False, "NotAllProtected", f"{unprotected} unprotected, {failing} failing of {selected}")
    else:
        ready = _ready(True, "Protected", f"all {selected} selected databases have a DatabaseBackup")
    listed.sort(key=lambda item: (item[0], item[1]["namespace"], item[1]["statefulset"]))
    return {
        "observedGeneration": generation,
        "selected": selected,
        "covered": covered,
        "coveredByHand": hand,
        "failing": failing,
        "unprotected": unprotected,
        "databases": [entry for _, entry in listed[:MAX_LISTED]],
        "conditions": [ready],
    }


def _failing(backup: Mapping[str, Any]) -> bool:
    status = backup.get("status") or {}
    failures = status.get("consecutiveFailures")
    return status.get("phase") in _FAILING or (isinstance(failures, int) and failures > 0)


def _ready(ok: bool, reason: str, message: str) -> dict[str, Any]:
    return {"type": "Ready", "status": "True" if ok else "False", "reason": reason, "message": message}


def _read(obj: Mapping[str, Any]) -> _Policy:
    name = str((obj.get("metadata") or {}).get("name") or "")
    spec, errors = parse_policy_spec(obj.get("spec"))
    problem = "; ".join(str(e) for e in errors)[:1000] if errors else None
    return _Policy(obj=obj, name=name, spec=spec, problem=problem)


def _created(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("creationTimestamp") or "")


def _statefulsets(
    objects: Iterable[Mapping[str, Any]],
) -> Iterable[tuple[str, str, Mapping[str, str], Mapping[str, Any]]]:
    for sts in objects:
        metadata = sts.get("metadata") or {}
        labels = metadata.get("labels") or {}
        yield str(metadata.get("namespace") or ""), str(metadata.get("name") or ""), labels, sts
