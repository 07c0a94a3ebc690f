"""One deadline for everything an admission request looks up.

The API server waits `timeoutSeconds` (5 s, deploy/webhook/webhooks.yaml) for the webhook and then fails the
request; with failurePolicy Fail that refuses the apply with a timeout the user cannot act on. A lookup that gave
up only after that (a 5 s read timeout, twice) could never turn into the answer meant for it: "could not check",
a warning. So each request gets `LOOKUP_BUDGET` for all of its lookups together (the StatefulSet, then its Pods);
what is not answered by then is a warning, and the request is answered within the budget plus a few milliseconds
of judging: 2 s, well under 5 s, leaving the rest for the API server's connection to us and a slow handshake.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any, Final

from common.hosts import ALLOW_EXTERNAL_HOSTS, DEFAULT_CLUSTER_DOMAIN, HostFacts, host_refusal, own_service
from webhook.backups import (
    Database,
    ImageFacts,
    backup_claim,
    database_to_check,
    host_to_check,
    image_to_check,
    store_of,
    store_to_check,
)
from webhook.database import DatabaseFinder, Unanswered
from webhook.restores import EXTERNAL, Sources, external_host, source_to_check
from webhook.reviews import AdmissionRequest, StoreFacts

__all__ = ["LOOKUP_BUDGET", "Lookup"]

LOOKUP_BUDGET: Final = 2.0


@dataclass(frozen=True)
class Lookup:
    finder: DatabaseFinder
    budget: float = LOOKUP_BUDGET
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN

    async def for_validation(self, admission: AdmissionRequest) -> Database | None:
        """The StatefulSet when validation needs it (see database_to_check) and, when the backup goes to a claim,
        every StatefulSet of the namespace and the claims their Pods mount."""
        target = database_to_check(admission)
        if target is None:
            return None
        namespace = target[0]
        deadline = self._deadline()
        spec = (admission.get("object") or {}).get("spec")
        if not isinstance(spec, dict) or backup_claim(spec) is None:
            return await self._find(*target, deadline)
        if self.finder.cached:
            # Answered from the watch caches: in turn, with no tasks to run them side by side.
            found = await self._find(*target, deadline)
            volumes, problem = await self._volumes(namespace, deadline)
        else:
            found, (volumes, problem) = await asyncio.gather(
                self._find(*target, deadline), self._volumes(namespace, deadline)
            )
        database: Database = found
        if volumes is None:
            return replace(database, volumes_error=problem)
        statefulsets, pods = volumes
        return replace(database, statefulsets=tuple(statefulsets), pods=pods)

    async def _volumes(
        self, namespace: str, deadline: float
    ) -> tuple[tuple[list[dict[str, Any]], dict[str, tuple[str, ...]]] | None, str | None]:
        """Every StatefulSet of the namespace and the claims of their Pods, or why they could not be read."""
        if self.finder.cached:
            return (await self.finder.statefulsets(namespace), await self.finder.pods(namespace)), None
        try:
            async with asyncio.timeout_at(deadline):
                statefulsets, pods = await asyncio.gather(
                    self.finder.statefulsets(namespace), self.finder.pods(namespace)
                )
        except TimeoutError:
            return None, self._late()
        except Unanswered as error:
            return None, str(error)
        return (statefulsets, pods), None

    async def for_store(self, admission: AdmissionRequest) -> StoreFacts | None:
        """The BackupStore that `spec.storage.s3.store` names, and the namespace's labels its selector reads."""
        name = store_to_check(admission)
        if name is None:
            return None
        return await self.store(str(admission.get("namespace") or ""), name)

    async def store(self, namespace: str, name: str, deadline: float | None = None) -> StoreFacts:
        """The BackupStore and the namespace's labels, by `deadline` (default: one budget from now)."""
        try:
            async with asyncio.timeout_at(deadline or self._deadline()):
                found, meta = await asyncio.gather(self.finder.backupstore(name), self.finder.namespace(namespace))
        except TimeoutError:
            return StoreFacts(name, error=self._late())
        except Unanswered as error:
            return StoreFacts(name, error=str(error))
        return StoreFacts(name, found, dict(meta.get("labels") or {}))

    async def for_image(self, admission: AdmissionRequest) -> ImageFacts | None:
        """`spec.verify.image` with the database StatefulSet's images and the namespace's approved ones."""
        wanted = image_to_check(admission)
        if wanted is None:
            return None
        image, database = wanted
        namespace = str(admission.get("namespace") or "")
        deadline = self._deadline()
        try:
            async with asyncio.timeout_at(deadline):
                found, meta = await asyncio.gather(
                    self._find(namespace, database, deadline), self.finder.namespace(namespace)
                )
        except TimeoutError:
            return ImageFacts(image, error=self._late())
        except Unanswered as error:
            return ImageFacts(image, error=str(error))
        if found.error is not None:
            return ImageFacts(image, error=found.error)
        return ImageFacts(image, found.statefulset, dict(meta.get("annotations") or {}))

    async def for_host(self, admission: AdmissionRequest) -> HostFacts | None:
        """What decides whether `spec.connection.host` may get the password (common.hosts), when a create or an
        update sets it."""
        host = host_to_check(admission)
        if host is None:
            return None
        return await self.host(str(admission.get("namespace") or ""), host)

    async def host(self, namespace: str, host: str, deadline: float | None = None) -> HostFacts:
        """The Service of the namespace that `host` names, else the namespace's label; by `deadline` (default: one
        budget from now). A lookup that is not answered is an `error`, which refuses."""
        facts = HostFacts(host, namespace, own_service(host, namespace, self.cluster_domain))
        try:
            async with asyncio.timeout_at(deadline or self._deadline()):
                if facts.service is not None:
                    facts = replace(facts, found=await self.finder.service(namespace, facts.service))
                    if facts.found is not None and host_refusal(facts) is None:
                        return facts  # the usual case: one read
                labels = (await self.finder.namespace(namespace)).get("labels") or {}
                return replace(facts, allowed=labels.get(ALLOW_EXTERNAL_HOSTS) == "true")
        except TimeoutError:
            return replace(facts, error=self._late())
        except Unanswered as error:
            return replace(facts, error=str(error))

    async def for_defaults(self, admission: AdmissionRequest) -> Database | None:
        """The StatefulSet the defaults are read from, on create and update."""
        obj = admission.get("object")
        spec = obj.get("spec") if isinstance(obj, dict) else None
        name = spec.get("databaseName") if isinstance(spec, dict) else None
        if admission.get("operation") not in ("CREATE", "UPDATE") or not isinstance(name, str) or not name:
            return None
        deadline = self._deadline()
        return await self._find(str(admission.get("namespace") or ""), name, deadline)

    async def for_restore(self, admission: AdmissionRequest) -> Sources | None:
        """A DatabaseRestore's source DatabaseBackup, and whether its target StatefulSet (by default the source's)
        exists, on create; within one budget."""
        wanted = source_to_check(admission)
        if wanted is None:
            return None
        namespace, name, target = wanted
        deadline = self._deadline()
        try:
            async with asyncio.timeout_at(deadline):
                source = await self.finder.databasebackup(namespace, name)
        except TimeoutError:
            return Sources(None, error=self._late())
        except Unanswered as error:
            return Sources(None, error=str(error))
        if source is None:
            return Sources(None)
        # The source's store (for where its backups are), the external target's host, and the target StatefulSet,
        # side by side in the same budget.
        store_name = store_of(source.get("spec") or {})
        external = external_host(admission)
        database = target or (source.get("spec") or {}).get("databaseName")
        looked_up = target != EXTERNAL and isinstance(database, str) and bool(database)
        store, host, found = await asyncio.gather(
            self.store(namespace, store_name, deadline) if store_name is not None else _none(),
            self.host(namespace, external, deadline) if external is not None else _none(),
            self._find(namespace, str(database), deadline) if looked_up else _none(),
        )
        if found is None:
            # No StatefulSet to look up: a server outside the namespace's StatefulSets (the restore connects to it).
            return Sources(source, store=store, host=host)
        if found.error is not None:
            return Sources(source, error=found.error, store=store, host=host)
        return Sources(source, target_found=found.statefulset is not None, store=store, host=host)

    async def _find(self, namespace: str, name: str, deadline: float) -> Database:
        try:
            async with asyncio.timeout_at(deadline):
                return await self.finder.find(namespace, name)
        except TimeoutError:
            return Database(namespace, name, None, self._late())

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.budget

    def _late(self) -> str:
        return f"no answer from the API server within {self.budget:g} s"


async def _none() -> None:
    return None
