"""What the reconciler's caches keep of each object (reconciler/backup_controller.py): all the reconcile reads, and not
the rest, which at 5,000 schedules is most of the process's memory (tests/bench/RESULTS.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from kubernetes_asyncio.client import ApiClient

from common.backups.defaults import default_spec
from common.backups.model import parse_spec
from common.constants import ANNOTATION_SCHEDULED_TIME, LABEL_BACKUP_NAME, LABEL_MANAGED_BY, LABEL_RUN
from common.statefulset import _facts, essentials, facts
from reconciler.backup_controller import (
    LAST_APPLIED,
    Controller,
    _job_essentials,
    _owner,
    _owner_uid,
    _without_last_applied,
)
from reconciler.executor import JobExecutor
from reconciler.jobs import RunnerSettings, backup_job
from reconciler.metrics import Metrics
from reconciler.policy_controller import PolicyController
from tests.fixtures import databasebackup, statefulset


def served_job() -> dict[str, object]:
    """A backup Job as the API server answers: with the labels and fields it adds."""
    owner = databasebackup(name="nightly", namespace="shop")
    owner["metadata"]["uid"] = "0000-1111"
    spec, _ = parse_spec(default_spec(owner["spec"], namespace="shop", statefulset=statefulset()))
    assert spec is not None
    job = backup_job(owner, spec, scheduled=datetime(2026, 12, 2, 3, 0, tzinfo=UTC), runner=RunnerSettings())
    job["metadata"].update(uid="job-uid", resourceVersion="42", generation=1, creationTimestamp="2026-12-02T03:00:01Z")
    job["metadata"]["labels"].update(
        {"batch.kubernetes.io/controller-uid": "job-uid", "controller-uid": "job-uid", "job-name": "x"}
    )
    job["status"] = {"active": 1, "startTime": "2026-12-02T03:00:01Z"}
    return job


def test_a_job_is_kept_without_its_spec_and_the_labels_the_api_server_adds() -> None:
    job = served_job()
    kept = _job_essentials(json.loads(json.dumps(job)))
    assert "spec" not in kept
    labels = kept["metadata"]["labels"]
    assert {LABEL_BACKUP_NAME, LABEL_RUN, LABEL_MANAGED_BY} <= labels.keys()
    assert not {"controller-uid", "job-name", "batch.kubernetes.io/controller-uid"} & labels.keys()
    assert kept["metadata"]["annotations"][ANNOTATION_SCHEDULED_TIME] == "2026-12-02T03:00:00Z"
    assert kept["status"] == {"active": 1, "startTime": "2026-12-02T03:00:01Z"}
    assert _owner(kept) == ("shop", "nightly")
    assert _owner_uid(kept) == "0000-1111"
    assert len(json.dumps(kept)) < len(json.dumps(job)) / 2


def test_a_databasebackup_is_kept_without_kubectls_copy_of_it_and_otherwise_whole() -> None:
    obj = databasebackup(name="nightly", namespace="shop")
    obj["metadata"]["annotations"] = {LAST_APPLIED: json.dumps(obj), "databases.test.io/backup-now": "1"}
    kept = _without_last_applied(obj)
    assert kept["metadata"]["annotations"] == {"databases.test.io/backup-now": "1"}
    assert kept["spec"] == obj["spec"]
    assert LAST_APPLIED in obj["metadata"]["annotations"]  # the input is not changed
    plain = databasebackup()
    assert _without_last_applied(plain) is plain


async def test_every_statefulset_cache_keeps_the_shape_facts_are_memoised_for() -> None:
    """`facts` is memoised per uid and resourceVersion: a controller that cached a slimmer StatefulSet (the policy
    controller once kept no serviceName) would answer for every other, and a DatabaseBackup without a host became
    InvalidSpec. Every StatefulSet cache keeps `essentials`, which keeps all that facts reads."""
    sts = statefulset("orders", "shop")
    sts["metadata"].update(uid="sts-uid", resourceVersion="7")
    assert facts(essentials(json.loads(json.dumps(sts))), "shop") == _facts(sts, "shop")
    async with ApiClient() as api:
        backups = Controller(api, JobExecutor(api), RunnerSettings(), Metrics())
        policies = PolicyController(api, Metrics())
        assert backups.statefulsets.transform is essentials
        assert policies.statefulsets.transform is essentials
