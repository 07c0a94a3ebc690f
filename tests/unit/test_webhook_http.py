"""The webhook's HTTP layer: admission over POST, bad input answered with a 4xx that says why, never a 5xx."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.fixtures import admission_review, databasebackup, statefulset
from tests.unit.test_restores import FILE, restore, source
from webhook.backups import Database
from webhook.metrics import Metrics
from webhook.server import MAX_BODY, make_app

ClientMaker = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


class FakeFinder:
    """Our own seam (webhook.database.DatabaseFinder), answering from dicts; `hang` makes a lookup that never ends
    (an API server that accepted the connection and never answers)."""

    def __init__(
        self,
        known: dict[tuple[str, str], dict[str, Any]] | None = None,
        fail: bool = False,
        pods: dict[str, tuple[str, ...]] | None = None,
        hang: frozenset[str] = frozenset(),
        services: dict[tuple[str, str], dict[str, Any]] | None = None,
        labels: dict[str, dict[str, str]] | None = None,
        annotations: dict[str, dict[str, str]] | None = None,
        stores: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.known = known or {}
        self.fail = fail
        self.mounts = pods or {}
        self.hang = hang
        self.calls: list[tuple[str, str]] = []
        # By default every StatefulSet's governing Service exists, as in a cluster.
        self.services = (
            services
            if services is not None
            else {
                (ns, str(sts["spec"]["serviceName"])): {"spec": {"clusterIP": "None"}}
                for (ns, _), sts in self.known.items()
                if sts.get("spec", {}).get("serviceName")
            }
        )
        self.labels = labels or {}
        self.annotations = annotations or {}
        self.stores = stores or {}
        self.reads: list[str] = []
        self.backups: dict[tuple[str, str], dict[str, Any]] = {}

    @property
    def cached(self) -> bool:
        # A finder that hangs or fails stands for an API server being asked; one that answers stands for the caches.
        return not self.hang and not self.fail

    async def find(self, namespace: str, name: str) -> Database:
        self.calls.append((namespace, name))
        if self.fail:
            raise RuntimeError("lookup exploded")
        if "find" in self.hang:
            await asyncio.Event().wait()
        return Database(namespace, name, self.known.get((namespace, name)))

    async def statefulsets(self, namespace: str) -> list[dict[str, Any]]:
        if "statefulsets" in self.hang:
            await asyncio.Event().wait()
        return [sts for (where, _), sts in self.known.items() if where == namespace]

    async def pods(self, namespace: str) -> dict[str, tuple[str, ...]]:
        if "pods" in self.hang:
            await asyncio.Event().wait()
        return self.mounts

    async def service(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(f"service {namespace}/{name}")
        if "service" in self.hang:
            await asyncio.Event().wait()
        return self.services.get((namespace, name))

    async def namespace(self, namespace: str) -> dict[str, Any]:
        self.reads.append(f"namespace {namespace}")
        return {"labels": self.labels.get(namespace, {}), "annotations": self.annotations.get(namespace, {})}

    async def backupstore(self, name: str) -> dict[str, Any] | None:
        self.reads.append(f"backupstore {name}")
        return self.stores.get(name)

    async def databasebackup(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(f"databasebackup {namespace}/{name}")
        return self.backups.get((namespace, name))


@pytest.fixture
def finder() -> FakeFinder:
    return FakeFinder({("shop", "example-db"): statefulset()})


@pytest.fixture
async def http(aiohttp_client: ClientMaker, finder: FakeFinder) -> TestClient[web.Request, web.Application]:
    return await aiohttp_client(make_app(finder, Metrics(), ready=lambda: True))


async def post(http: TestClient[web.Request, web.Application], path: str, body: Any) -> tuple[int, Any]:
    data = io.BytesIO(body if isinstance(body, bytes) else json.dumps(body).encode())
    async with http.post(path, data=data, headers={"Content-Type": "application/json"}) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


async def test_validate_answers_an_admission_review(http: TestClient[web.Request, web.Application]) -> None:
    body = admission_review(databasebackup(schedule="*/5 * * *"))
    status, answer = await post(http, "/validate", body)
    assert status == 200
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == body["request"]["uid"]
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"]["message"].startswith('spec.schedule: "*/5 * * *" has 4 fields')


async def test_mutate_answers_with_a_json_patch(http: TestClient[web.Request, web.Application]) -> None:
    status, answer = await post(http, "/mutate", admission_review(databasebackup()))
    assert status == 200
    assert answer["response"]["patchType"] == "JSONPatch"
    operations = json.loads(base64.b64decode(answer["response"]["patch"]))
    assert {"op": "add", "path": "/spec/backupPath", "value": "/backups/example-db"} in operations


async def test_validate_asks_for_the_database_only_when_it_must(
    http: TestClient[web.Request, web.Application], finder: FakeFinder
) -> None:
    await post(http, "/validate", admission_review(databasebackup()))
    await post(http, "/validate", admission_review(databasebackup(), operation="UPDATE", old=databasebackup()))
    assert finder.calls == [("shop", "example-db")]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "the body is not JSON"),
        (b"\xff\xfe", 400, "the body is not JSON"),
        (b"[]", 400, "not an AdmissionReview v1 request: the body must be a JSON object"),
        (b'{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1beta1"}', 400, 'apiVersion must be "admission'),
        (b'{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{}}', 400, "request.uid must be"),
        (b'{"kind":"Status"}', 400, 'kind must be "AdmissionReview"'),
    ],
)
async def test_bad_bodies_get_a_400_that_says_why(
    http: TestClient[web.Request, web.Application], body: bytes, status: int, message: str
) -> None:
    for path in ("/validate", "/mutate"):
        got, text = await post(http, path, body)
        assert got == status
        assert message in text


async def test_a_body_over_the_limit_gets_413(http: TestClient[web.Request, web.Application]) -> None:
    status, _ = await post(http, "/validate", b" " * (MAX_BODY + 1))
    assert status == 413


async def test_a_body_of_3_mib_like_the_api_server_sends_is_read(
    http: TestClient[web.Request, web.Application],
) -> None:
    obj = databasebackup()
    obj["metadata"]["annotations"] = {"big": "x" * (3 * 1024 * 1024)}
    status, answer = await post(http, "/validate", admission_review(obj))
    assert status == 200
    assert answer["response"]["allowed"] is True


async def test_the_wrong_content_type_gets_415(http: TestClient[web.Request, web.Application]) -> None:
    async with http.post("/validate", data=b"{}", headers={"Content-Type": "text/plain"}) as response:
        assert response.status == 415
        assert "Content-Type must be application/json" in await response.text()


@pytest.mark.parametrize(("method", "path"), [("GET", "/validate"), ("PUT", "/mutate"), ("POST", "/healthz")])
async def test_the_wrong_method_gets_405(
    http: TestClient[web.Request, web.Application], method: str, path: str
) -> None:
    async with http.request(method, path) as response:
        assert response.status == 405


async def test_fields_of_the_wrong_type_are_a_denial_not_a_crash(
    http: TestClient[web.Request, web.Application],
) -> None:
    obj = databasebackup()
    obj["spec"] = {"databaseName": ["x"], "schedule": {"a": 1}, "connection": "db", "retention": {"keepLast": "7"}}
    for path in ("/validate", "/mutate"):
        status, answer = await post(http, path, admission_review(obj))
        assert status == 200
    status, answer = await post(http, "/validate", admission_review(obj))
    assert answer["response"]["allowed"] is False
    assert "spec.retention.keepLast: must be a whole number" in answer["response"]["status"]["message"]


async def test_an_internal_error_is_a_denial_naming_it_never_a_5xx(aiohttp_client: ClientMaker) -> None:
    http = await aiohttp_client(make_app(FakeFinder(fail=True), Metrics(), ready=lambda: True))
    status, answer = await post(http, "/validate", admission_review(databasebackup()))
    assert status == 200
    assert answer["response"]["allowed"] is False
    assert (
        "the webhook failed to judge this request: RuntimeError('lookup exploded')"
        in (answer["response"]["status"]["message"])
    )


async def test_health_readiness_and_metrics(aiohttp_client: ClientMaker) -> None:
    ready = {"now": False}
    http = await aiohttp_client(make_app(FakeFinder(), Metrics(), ready=lambda: ready["now"]))
    async with http.get("/healthz") as response:
        assert response.status == 200
    async with http.get("/readyz") as response:
        assert response.status == 503
    ready["now"] = True
    async with http.get("/readyz") as response:
        assert response.status == 200
    await post(http, "/validate", admission_review(databasebackup()))
    await post(http, "/validate", b"nope")
    async with http.get("/metrics") as response:
        text = await response.text()
    assert 'dbb_webhook_admission_requests_total{endpoint="validate",result="denied"} 1.0' in text
    assert 'dbb_webhook_admission_requests_total{endpoint="validate",result="bad_request"} 1.0' in text
    assert "dbb_webhook_admission_duration_seconds_bucket" in text


# --- one deadline per admission request (webhook.lookup) ---------------------------------------------------------

API_SERVER_TIMEOUT = 5.0  # timeoutSeconds in deploy/webhook/webhooks.yaml


@pytest.mark.parametrize("path", ["/validate", "/mutate"])
async def test_an_api_server_that_never_answers_is_answered_within_the_budget_not_a_timeout(
    aiohttp_client: ClientMaker, path: str
) -> None:
    http = await aiohttp_client(make_app(FakeFinder(hang=frozenset({"find"})), Metrics(), lambda: True, budget=0.2))
    started = time.monotonic()
    status, answer = await post(http, path, admission_review(databasebackup()))
    assert time.monotonic() - started < API_SERVER_TIMEOUT
    assert status == 200
    if path == "/mutate":  # defaults that could not be read are left out; validation judges what is there
        assert answer["response"]["allowed"] is True
    else:  # a rule that could not be checked refuses: apply again
        assert answer["response"]["allowed"] is False
        assert (
            'spec.databaseName: could not check StatefulSet "example-db": no answer from the API server within 0.2 s; '
            "nothing was changed: try again"
        ) in answer["response"]["status"]["message"]


async def test_pods_that_cannot_be_read_in_time_refuse_the_claim(aiohttp_client: ClientMaker) -> None:
    finder = FakeFinder({("shop", "example-db"): statefulset()}, hang=frozenset({"pods"}))
    http = await aiohttp_client(make_app(finder, Metrics(), lambda: True, budget=0.2))
    status, answer = await post(http, "/validate", admission_review(databasebackup()))
    assert status == 200
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"]["message"] == (
        'spec.storage.persistentVolumeClaim.claimName: could not read the StatefulSets and Pods of namespace "shop": '
        "no answer from the API server within 0.2 s; nothing was changed: try again"
    )


async def test_a_claim_a_pod_of_the_database_mounts_is_refused(aiohttp_client: ClientMaker) -> None:
    finder = FakeFinder({("shop", "example-db"): statefulset()}, pods={"example-db-0": ("shared-data",)})
    http = await aiohttp_client(make_app(finder, Metrics(), lambda: True))
    obj = databasebackup(storage={"persistentVolumeClaim": {"claimName": "shared-data"}})
    status, answer = await post(http, "/validate", admission_review(obj))
    assert status == 200
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"]["message"] == (
        'spec.storage.persistentVolumeClaim.claimName: "shared-data" is mounted by Pod "example-db-0" of a '
        "StatefulSet; backups need a claim of their own"
    )


async def test_a_restore_onto_the_protected_database_is_refused_and_one_to_a_new_name_is_pinned(
    http: TestClient[web.Request, web.Application], finder: FakeFinder
) -> None:
    finder.backups[("shop", "nightly")] = source()
    kind = {"group": "databases.test.io", "version": "v1", "kind": "DatabaseRestore"}
    status, answer = await post(http, "/validate-restore", admission_review(restore(), kind=kind))
    assert status == 200
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"]["message"].startswith(
        "spec.replace: false, and the restore would overwrite 'shop' on StatefulSet 'example-db'"
    )
    renamed = restore(target={"databases": [{"from": "shop", "to": "shop_copy"}]})
    status, answer = await post(http, "/validate-restore", admission_review(renamed, kind=kind))
    assert answer["response"]["allowed"] is True, answer
    status, answer = await post(http, "/mutate-restore", admission_review(renamed, kind=kind))
    operations = json.loads(base64.b64decode(answer["response"]["patch"]))
    assert {"op": "add", "path": "/spec/source/file", "value": FILE} in operations
    assert {"op": "add", "path": "/spec/target/databaseName", "value": "example-db"} in operations
    finder.backups.clear()
    status, answer = await post(http, "/validate-restore", admission_review(renamed, kind=kind))
    assert answer["response"]["status"]["message"] == (
        "spec.source.databaseBackup: DatabaseBackup 'nightly' not found in namespace 'shop'"
    )
