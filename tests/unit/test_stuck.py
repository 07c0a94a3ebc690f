"""Which waiting Pods fail their run, after which grace, with which words (reconciler.stuck)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.outcomes import ANNOTATION_CANNOT_START, outcome
from reconciler.stuck import diagnose

CREATED = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


def pod(
    *, waiting: str | None = None, message: str = "", unschedulable: bool = False, init: bool = False
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Pending"}
    if waiting is not None:
        key = "initContainerStatuses" if init else "containerStatuses"
        status[key] = [{"name": "backup", "state": {"waiting": {"reason": waiting, "message": message}}}]
    if unschedulable:
        status["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims.",
            }
        ]
    return {"metadata": {"name": "nightly-1-abcde", "creationTimestamp": "2026-12-06T10:00:00Z"}, "status": status}


@pytest.mark.parametrize(
    ("waiting", "reason", "grace"),
    [
        ("CreateContainerConfigError", "PodConfigError", 30),
        ("CreateContainerError", "PodConfigError", 30),
        ("InvalidImageName", "ImageUnavailable", 30),
        ("ErrImageNeverPull", "ImageUnavailable", 30),
        ("ErrImagePull", "ImageUnavailable", 300),
        ("ImagePullBackOff", "ImageUnavailable", 300),
    ],
)
def test_a_waiting_container_fails_its_run_once_its_grace_has_passed(waiting: str, reason: str, grace: int) -> None:
    stuck = pod(waiting=waiting, message="the kubelet's words")
    before = diagnose([stuck], CREATED + timedelta(seconds=grace - 1))
    assert before.stuck is None
    assert before.recheck == timedelta(seconds=1)
    after = diagnose([stuck], CREATED + timedelta(seconds=grace))
    assert after.stuck is not None
    assert after.stuck.reason == reason
    assert after.stuck.message == f"Pod nightly-1-abcde cannot start: container backup: {waiting}: the kubelet's words"


def test_an_init_container_counts_as_the_main_one() -> None:
    found = diagnose([pod(waiting="ErrImageNeverPull", init=True)], CREATED + timedelta(minutes=1))
    assert found.stuck is not None
    assert found.stuck.message == "Pod nightly-1-abcde cannot start: container backup: ErrImageNeverPull"


def test_an_unschedulable_pod_gets_five_minutes_then_fails_with_the_schedulers_words() -> None:
    waiting = pod(unschedulable=True)
    assert diagnose([waiting], CREATED + timedelta(minutes=4)).recheck == timedelta(minutes=1)
    found = diagnose([waiting], CREATED + timedelta(minutes=5))
    assert found.stuck is not None
    assert found.stuck.reason == "Unschedulable"
    assert "unbound immediate PersistentVolumeClaims" in found.stuck.message


@pytest.mark.parametrize("waiting", ["ContainerCreating", "PodInitializing", None])
def test_states_that_heal_by_themselves_never_fail_a_run(waiting: str | None) -> None:
    found = diagnose([pod(waiting=waiting)], CREATED + timedelta(days=1))
    assert found == diagnose([], CREATED)
    assert found.stuck is None
    assert found.recheck is None


def test_a_pod_that_ended_is_the_jobs_business_not_ours() -> None:
    ended = pod(waiting="CreateContainerConfigError")
    ended["status"]["phase"] = "Failed"
    assert diagnose([ended], CREATED + timedelta(hours=1)).stuck is None


def test_the_kubelets_message_is_clipped() -> None:
    found = diagnose([pod(waiting="ErrImagePull", message="x" * 2000)], CREATED + timedelta(hours=1))
    assert found.stuck is not None
    assert len(found.stuck.message) == 400
    assert found.stuck.message.endswith("…")


def test_the_earliest_grace_decides_when_to_look_again() -> None:
    slow, fast = pod(waiting="ImagePullBackOff"), pod(waiting="CreateContainerConfigError")
    assert diagnose([slow, fast], CREATED + timedelta(seconds=10)).recheck == timedelta(seconds=20)


def test_a_job_we_ended_reports_our_reason_not_the_deadline() -> None:
    why = '{"reason": "PodConfigError", "message": "Pod p cannot start: container backup: CreateContainerConfigError"}'
    condition = {"status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified"}
    job: dict[str, Any] = {
        "metadata": {"name": "nightly-1", "annotations": {ANNOTATION_CANNOT_START: why}},
        "status": {"conditions": [{"type": "Failed", "lastTransitionTime": "2026-12-06T10:01:00Z", **condition}]},
    }
    seen = outcome(job, None)
    assert (seen.state, seen.reason) == ("Failed", "PodConfigError")
    assert seen.message == "Pod p cannot start: container backup: CreateContainerConfigError"
    job["metadata"]["annotations"] = {}
    assert outcome(job, None).reason == "DeadlineExceeded"
