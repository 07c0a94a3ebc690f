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
from typing import Final

from webhook.admission import Database, backup_claim, database_to_check, host_to_check
from webhook.database import DatabaseFinder, Unanswered
from webhook.hosts import ALLOW_EXTERNAL_HOSTS, HostFacts, host_problem, own_service
from webhook.restores import EXTERNAL, Sources, source_to_check
from webhook.reviews import AdmissionRequest

__all__ = ["LOOKUP_BUDGET", "Lookup"]

LOOKUP_BUDGET: Final = 2.0


@dataclass(frozen=True)
class Lookup:
    finder: DatabaseFinder
    budget: float = LOOKUP_BUDGET

    async def for_validation(self, admission: AdmissionRequest) -> Database | None:
        """The StatefulSet when validation needs it (see database_to_check), with the claims its Pods mount."""
        target = database_to_check(admission)
        if target is None:
            return None
        deadline = asyncio.get_running_loop().time() + self.budget
        database = await self._find(*target, deadline)
        spec = (admission.get("object") or {}).get("spec")
        if database.statefulset is None or not isinstance(spec, dict) or backup_claim(spec) is None:
            return database
        try:
            async with asyncio.timeout_at(deadline):
                return replace(database, pods=await self.finder.pods(target[0], database.statefulset))
        except TimeoutError:
            return replace(database, pods_error=self._late())
        except Unanswered as error:
            return replace(database, pods_error=str(error))

    async def for_host(self, admission: AdmissionRequest) -> HostFacts | None:
        """What decides whether `spec.connection.host` may get the password (webhook.hosts), when a create or an
        update sets it: its Service in the namespace, else the namespace's label."""
        host = host_to_check(admission)
        if host is None:
            return None
        namespace = str(admission.get("namespace") or "")
        facts = HostFacts(host, namespace, own_service(host, namespace))
        try:
            async with asyncio.timeout(self.budget):
                if facts.service is not None:
                    facts = replace(facts, found=await self.finder.service(namespace, facts.service))
                    if facts.found is not None and host_problem(facts, skip_database_check=False) == (None, None):
                        return facts  # the usual case: one read
                labels = await self.finder.namespace_labels(namespace)
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
        deadline = asyncio.get_running_loop().time() + self.budget
        return await self._find(str(admission.get("namespace") or ""), name, deadline)

    async def for_restore(self, admission: AdmissionRequest) -> Sources | None:
        """A DatabaseRestore's source DatabaseBackup, and whether its target StatefulSet (by default the source's)
        exists, on create; within one budget."""
        wanted = source_to_check(admission)
        if wanted is None:
            return None
        namespace, name, target = wanted
        deadline = asyncio.get_running_loop().time() + self.budget
        try:
            async with asyncio.timeout_at(deadline):
                source = await self.finder.databasebackup(namespace, name)
        except TimeoutError:
            return Sources(None, error=self._late())
        except Unanswered as error:
            return Sources(None, error=str(error))
        if source is None:
            return Sources(None)
        if target == EXTERNAL:
            return Sources(source)  # a server outside the namespace's StatefulSets: the restore itself connects
        database = target or (source.get("spec") or {}).get("databaseName")
        if not isinstance(database, str) or not database:
            return Sources(source)
        found = await self._find(namespace, database, deadline)
        if found.error is not None:
            return Sources(source, error=found.error)
        return Sources(source, target_found=found.statefulset is not None)

    async def _find(self, namespace: str, name: str, deadline: float) -> Database:
        try:
            async with asyncio.timeout_at(deadline):
                return await self.finder.find(namespace, name)
        except TimeoutError:
            return Database(namespace, name, None, self._late())

    def _late(self) -> str:
        return f"no answer from the API server within {self.budget:g} s"
