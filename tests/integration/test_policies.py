"""DatabaseBackupPolicies on a real API server, with the real webhook judging every DatabaseBackup the policy makes:
namespaces and StatefulSets appear, change labels and go, and the DatabaseBackups follow; one written by hand wins;
a bad template is refused at apply time; deleting the policy deletes its DatabaseBackups (not their backups: no
DatabaseBackup deletion touches storage)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from common.constants import GROUP, PLURAL, POLICY_PLURAL, VERSION
from common.kube import MERGE_PATCH, api_client, body
from common.policies.render import LABEL_POLICY
from hack.harness.controlplane import ControlPlane
from reconciler.metrics import Metrics
from reconciler.policy_controller import PolicyController
from tests.fixtures import governing_service, statefulset
from tests.integration.conftest import WEBHOOK_LABEL, Webhook

DEADLINE = 30.0


async def until(check: Callable[[], Awaitable[Any]], what: str, seconds: float = DEADLINE) -> Any:
    try:
        async with asyncio.timeout(seconds):
            while not (result := await check()):  # noqa: ASYNC110 - polls the API server
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {seconds}s") from None
    return result


@contextlib.asynccontextmanager
async def controller(api: client.ApiClient) -> AsyncIterator[PolicyController]:
    policies = PolicyController(api, Metrics())
    task = asyncio.create_task(policies.run())
    try:
        yield policies
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class World:
    def __init__(self, api: client.ApiClient, tag: str) -> None:
        self.api, self.tag = api, tag
        self.core, self.apps, self.custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)

    async def namespace(self, labels: dict[str, str]) -> str:
        name = f"pol-{uuid.uuid4().hex[:8]}"
        meta = {"name": name, "labels": {WEBHOOK_LABEL: "true", **labels}}
        await self.core.create_namespace(body({"apiVersion": "v1", "kind": "Namespace", "metadata": meta}))
        return name

    async def database(self, namespace: str, name: str, labels: dict[str, str], image: str = "postgres:16") -> None:
        sts = statefulset(name, namespace, image=image)
        sts["metadata"]["labels"] = labels
        await self.core.create_namespaced_service(namespace, body(governing_service(sts)))
        await self.apps.create_namespaced_stateful_set(namespace, body(sts))

    async def label(self, namespace: str, name: str | None, labels: dict[str, str | None]) -> None:
        patch = body({"metadata": {"labels": labels}})
        if name is None:
            await self.core.patch_namespace(namespace, patch, **MERGE_PATCH)
        else:
            await self.apps.patch_namespaced_stateful_set(name, namespace, patch, **MERGE_PATCH)

    async def backups(self, namespace: str) -> dict[str, dict[str, Any]]:
        listed = await self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        return {o["metadata"]["name"]: o for o in listed["items"]}

    async def policy(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = await self.custom.get_cluster_custom_object(GROUP, VERSION, POLICY_PLURAL, name)
        return found


def policy(name: str, tag: str, template: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DatabaseBackupPolicy",
        "metadata": {"name": name},
        "spec": {
            "namespaceSelector": {"matchLabels": {"policy-test": tag}},
            "selector": {"matchLabels": {"tier": "prod"}},
            "template": {"metadata": {"labels": {"team": "platform"}}, "spec": template},
        },
    }


async def test_databasebackups_follow_namespaces_and_statefulsets_and_a_hand_written_one_wins(
    control_plane: ControlPlane, webhook: Webhook
) -> None:
    tag = uuid.uuid4().hex[:8]
    name = f"nightly-{tag}"
    async with await api_client(control_plane.kubeconfig) as api, controller(api):
        world = World(api, tag)
        shop = await world.namespace({"policy-test": tag})
        lab = await world.namespace({})
        await world.database(shop, "orders", {"tier": "prod"})
        await world.database(shop, "scratch", {"tier": "dev"})
        await world.database(shop, "cache", {"tier": "prod"}, image="redis:7")
        await world.database(lab, "trials", {"tier": "prod"})
        template = {"schedule": "0 1 * * *", "window": "4h", "retention": {"keepLast": 3}}
        await world.custom.create_cluster_custom_object(
            GROUP, VERSION, POLICY_PLURAL, body(policy(name, tag, template))
        )
        try:
            made = await until(lambda: _backup(world, shop, f"orders-{name}"), "the policy's DatabaseBackup")
            assert made["spec"]["databaseName"] == "orders"
            assert made["spec"]["window"] == "4h"
            assert made["spec"]["engine"] == "PostgreSQL", "the webhook defaulted it, as for any DatabaseBackup"
            assert made["metadata"]["labels"][LABEL_POLICY] == name
            assert made["metadata"]["labels"]["team"] == "platform"
            assert made["metadata"]["ownerReferences"][0]["kind"] == "DatabaseBackupPolicy"
            assert sorted(await world.backups(shop)) == [f"orders-{name}"], "not the dev one, not the cache"
            status = await until(lambda: _status(world, name, selected=1, covered=1), "status: 1 of 1 covered")
            assert status["conditions"][0]["reason"] == "Protected"

            # A StatefulSet that comes to match, and a namespace that does, are covered within one reconcile.
            await world.label(shop, "scratch", {"tier": "prod"})
            await world.label(lab, None, {"policy-test": tag})
            await until(lambda: _backup(world, shop, f"scratch-{name}"), "the relabelled StatefulSet's")
            await until(lambda: _backup(world, lab, f"trials-{name}"), "the relabelled namespace's")
            await until(lambda: _status(world, name, selected=3, covered=3), "status: 3 of 3 covered")

            # One written by hand wins: the policy's goes, and the status says why.
            hand = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "DatabaseBackup",
                "metadata": {"name": "scratch-hourly"},
                "spec": {"databaseName": "scratch", "schedule": "@hourly"},
            }
            await world.custom.create_namespaced_custom_object(GROUP, VERSION, shop, PLURAL, body(hand))
            await until(lambda: _gone(world, shop, f"scratch-{name}"), "the policy's DatabaseBackup for scratch goes")
            status = await until(lambda: _status(world, name, selected=3, covered=3, coveredByHand=1), "by hand: 1")
            assert {
                "namespace": shop,
                "statefulset": "scratch",
                "coveredBy": "Hand",
                "databaseBackup": "scratch-hourly",
            } in (status["databases"])

            # A changed template is written again; the webhook defaults what it dropped.
            patch = {"spec": {"template": {"spec": {"schedule": "0 2 * * *", "window": None}}}}
            await world.custom.patch_cluster_custom_object(
                GROUP, VERSION, POLICY_PLURAL, name, body(patch), **MERGE_PATCH
            )
            updated = await until(
                lambda: _backup(world, shop, f"orders-{name}", schedule="0 2 * * *"), "the new template written"
            )
            assert "window" not in updated["spec"]
            assert updated["spec"]["engine"] == "PostgreSQL"

            # What stops matching, or goes, loses its DatabaseBackup.
            await world.label(shop, "orders", {"tier": None})
            await world.apps.delete_namespaced_stateful_set("trials", lab)
            await until(lambda: _gone(world, shop, f"orders-{name}"), "orders left the selector")
            await until(lambda: _gone(world, lab, f"trials-{name}"), "trials was deleted")
            await until(lambda: _status(world, name, selected=1, covered=1, coveredByHand=1), "status: 1 left, by hand")
        finally:
            await world.custom.delete_cluster_custom_object(GROUP, VERSION, POLICY_PLURAL, name)
        # Deleting the policy deletes what it made (the garbage collector would too; envtest runs none), and never
        # what was written by hand.
        await world.label(shop, "orders", {"tier": "prod"})
        assert "scratch-hourly" in await world.backups(shop)
        await until(lambda: _none_made_by(world, [shop, lab], name), "the policy's DatabaseBackups are gone")
        assert "scratch-hourly" in await world.backups(shop)


async def test_a_databasebackup_the_webhook_refuses_shows_as_failing_with_its_words(
    control_plane: ControlPlane, webhook: Webhook
) -> None:
    tag = uuid.uuid4().hex[:8]
    name = f"to-s3-{tag}"
    async with await api_client(control_plane.kubeconfig) as api, controller(api):
        world = World(api, tag)
        shop = await world.namespace({"policy-test": tag})
        await world.database(shop, "orders", {"tier": "prod"})
        template = {"schedule": "@daily", "storage": {"s3": {"store": f"missing-{tag}"}}}
        await world.custom.create_cluster_custom_object(
            GROUP, VERSION, POLICY_PLURAL, body(policy(name, tag, template))
        )
        try:
            status = await until(lambda: _status(world, name, selected=1, failing=1), "status: failing 1")
            assert status["covered"] == 0
            assert status["unprotected"] == 1
            [entry] = status["databases"]
            assert entry["statefulset"] == "orders"
            assert f'BackupStore "missing-{tag}" not found' in entry["problem"]
            assert await world.backups(shop) == {}
        finally:
            await world.custom.delete_cluster_custom_object(GROUP, VERSION, POLICY_PLURAL, name)


def test_a_policy_with_a_bad_template_is_refused_at_apply_naming_the_field(
    control_plane: ControlPlane, webhook: Webhook
) -> None:
    # The schema already has no databaseName under the template: the API server names it.
    bad = policy("bad-template", "x", {"schedule": "@daily", "databaseName": "orders"})
    result = control_plane.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert result.returncode != 0
    assert 'unknown field "spec.template.spec.databaseName"' in result.stderr
    # What only our rules know, the webhook refuses, naming the field under the template and the value.
    worse = policy("bad-template", "x", {"schedule": "0 25 * * *"})
    result = control_plane.kubectl("apply", "-f", "-", input=json.dumps(worse), check=False)
    assert result.returncode != 0
    assert (
        'admission webhook "vdatabasebackuppolicy.databases.test.io" denied the request: '
        'spec.template.spec.schedule: "0 25 * * *" hour 25 is out of range 0-23'
    ) in result.stderr
    assert control_plane.kubectl("get", POLICY_PLURAL, "bad-template", check=False).returncode != 0


async def _backup(world: World, namespace: str, name: str, **spec: Any) -> dict[str, Any] | None:
    found = (await world.backups(namespace)).get(name)
    if found is None or any(found["spec"].get(k) != v for k, v in spec.items()):
        return None
    return found


async def _gone(world: World, namespace: str, name: str) -> bool:
    return name not in await world.backups(namespace)


async def _none_made_by(world: World, namespaces: list[str], policy_name: str) -> bool:
    for namespace in namespaces:
        for backup in (await world.backups(namespace)).values():
            if backup["metadata"].get("labels", {}).get(LABEL_POLICY) == policy_name:
                return False
    return True


async def _status(world: World, name: str, **counts: int) -> dict[str, Any] | None:
    try:
        status: dict[str, Any] = (await world.policy(name)).get("status") or {}
    except ApiException:
        return None
    return status if all(status.get(k) == v for k, v in counts.items()) else None
