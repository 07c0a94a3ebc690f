"""Each command: its requests to the API server, as the user, and what it prints. An API error is raised as it comes
(`plugin.main` prints it as one line); the result of a followed request is the exit code."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TextIO

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from common.constants import (
    ANNOTATION_BACKUP_NOW,
    ANNOTATION_VERIFY_NOW,
    GROUP,
    LABEL_BACKUP_NAME,
    PLURAL,
    RESTORE_PLURAL,
    VERSION,
)
from common.kube import MERGE_PATCH, raw, sent, timeout
from plugin.follow import follow
from plugin.kube import refusal
from plugin.objects import RestoreRequest, annotation_patch, request_value, restore_object
from plugin.outcomes import Before, Step, backup_step, before, restore_step, verify_step
from plugin.progress import ProgressLine
from plugin.reports import backups_table, status_table

__all__ = [
    "POINT_IN_TIME_UNAVAILABLE",
    "Console",
    "PluginError",
    "backup",
    "list_backups",
    "restore",
    "status",
    "verify",
]

POINT_IN_TIME_UNAVAILABLE: Final = (
    "point-in-time restore is not available yet: this cluster's DatabaseRestore has no spec.pointInTime. "
    "Restore a stored backup instead (--file, default the newest; `kubectl dbb list` shows them)"
)


class PluginError(Exception):
    """A refusal of our own, printed as `error: <message>`."""


@dataclass
class Console:
    out: TextIO
    terminal: bool  # out is a terminal: progress is one line rewritten in place

    def print(self, line: str = "") -> None:
        self.out.write(line + "\n")
        self.out.flush()


async def backup(api: client.ApiClient, namespace: str, name: str, *, wait: bool, console: Console) -> int:
    """Ask for a backup now (the backup-now annotation); with `wait`, follow it to its file or its failure."""
    return await _ask(api, namespace, name, ANNOTATION_BACKUP_NOW, "backup", backup_step, wait=wait, console=console)


async def verify(api: client.ApiClient, namespace: str, name: str, *, wait: bool, console: Console) -> int:
    """Ask for a check of the stored backups now (the verify-now annotation); with `wait`, follow it to its verdict."""
    return await _ask(
        api, namespace, name, ANNOTATION_VERIFY_NOW, "verification", verify_step, wait=wait, console=console
    )


Judge = Callable[[Mapping[str, Any], str, Sequence[Mapping[str, Any]] | None, Before], Step]


async def _ask(
    api: client.ApiClient,
    namespace: str,
    name: str,
    annotation: str,
    what: str,
    judge: Judge,
    *,
    wait: bool,
    console: Console,
) -> int:
    """Set `annotation` to a new value on the DatabaseBackup; with `wait`, follow what the operator does about it."""
    custom = client.CustomObjectsApi(api)
    was = before(await _get(custom, namespace, PLURAL, name))
    value = request_value(datetime.now(UTC))
    await _annotate(custom, namespace, name, annotation, value)
    console.print(f"databasebackup.{GROUP}/{name}: {what} requested ({annotation}={value})")
    if not wait:
        return 0
    line = ProgressLine(console.out, terminal=console.terminal)
    jobs = _Jobs(api, namespace, name, line.note)

    async def step() -> Step:
        return judge(await _get(custom, namespace, PLURAL, name), value, await jobs.read(), was)

    return _result(await follow(api, namespace, step, line), console)


async def restore(
    api: client.ApiClient, namespace: str, request: RestoreRequest, *, wait: bool, console: Console
) -> int:
    """Create a DatabaseRestore; with `wait`, follow it to its end."""
    custom = client.CustomObjectsApi(api)
    try:
        # Strict: a field this cluster's CRD does not know (spec.pointInTime before #17) is refused, not dropped.
        created = await raw(
            custom.create_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                RESTORE_PLURAL,
                restore_object(request),
                field_validation="Strict",
                _preload_content=False,
                **timeout(),
            )
        )
    except ApiException as error:
        if request.point_in_time and error.status == 400 and "pointInTime" in refusal(error):
            raise PluginError(POINT_IN_TIME_UNAVAILABLE) from None
        raise
    name = str(created["metadata"]["name"])
    console.print(f"databaserestore.{GROUP}/{name} created")
    if not wait:
        return 0

    async def step() -> Step:
        return restore_step(await _get(custom, namespace, RESTORE_PLURAL, name))

    return _result(await follow(api, namespace, step, ProgressLine(console.out, terminal=console.terminal)), console)


async def list_backups(api: client.ApiClient, namespace: str, name: str, *, console: Console) -> int:
    """The stored backups of one DatabaseBackup, as its status records them."""
    obj = await _get(client.CustomObjectsApi(api), namespace, PLURAL, name)
    status = obj.get("status")
    console.print(backups_table(status if isinstance(status, Mapping) else {}, datetime.now(UTC)))
    return 0


async def status(api: client.ApiClient, namespace: str | None, *, console: Console) -> int:
    """Every DatabaseBackup of the namespace (of all namespaces when `namespace` is None), and what is wrong."""
    custom = client.CustomObjectsApi(api)
    if namespace is None:
        found = await raw(
            custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, _preload_content=False, **timeout())
        )
    else:
        found = await raw(
            custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _preload_content=False, **timeout())
        )
    objects = found.get("items") or []
    if not objects:
        where = "any namespace" if namespace is None else f"{namespace} namespace"
        console.print(f"No DatabaseBackups found in {where}.")
        return 0
    console.print(status_table(objects, datetime.now(UTC), all_namespaces=namespace is None))
    return 0


class _Jobs:
    """A DatabaseBackup's Jobs, while the user may read them; once refused, None from then on (status alone)."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str, note: Callable[[str], None]) -> None:
        self._batch = client.BatchV1Api(api)
        self._note = note
        self._namespace = namespace
        self._selector = f"{LABEL_BACKUP_NAME}={name}"
        self._readable = True

    async def read(self) -> list[dict[str, Any]] | None:
        if not self._readable:
            return None
        try:
            found = await raw(
                self._batch.list_namespaced_job(
                    self._namespace, label_selector=self._selector, _preload_content=False, **timeout()
                )
            )
        except ApiException as error:
            if error.status != 403:
                raise
            self._readable = False
            self._note(f"Jobs not readable: {refusal(error)}; following status only")
            return None
        items: list[dict[str, Any]] = found.get("items") or []
        return items


async def _get(custom: client.CustomObjectsApi, namespace: str, plural: str, name: str) -> dict[str, Any]:
    return await raw(
        custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name, _preload_content=False, **timeout()
        )
    )


async def _annotate(custom: client.CustomObjectsApi, namespace: str, name: str, annotation: str, value: str) -> None:
    await sent(
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            annotation_patch(annotation, value),
            _preload_content=False,
            **MERGE_PATCH,
            **timeout(),
        )
    )


def _result(step: Step, console: Console) -> int:
    for line in step.lines:
        console.print(line)
    return 0 if step.ok else 1
