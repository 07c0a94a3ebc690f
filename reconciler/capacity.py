"""Caps on the backup and check Jobs running at once: cluster-wide, per namespace, per database server and per
storage endpoint, set by the administrator (the reconciler's flags). Pure: Jobs and decisions in, counts out.

Each Job we create carries its cap keys (`keys_of`, in the annotation ANNOTATION_CAPS): a backup run counts toward
the cluster, its namespace, its database server (`<namespace>/<host, or the StatefulSet>`) and its storage (the
BackupStore, or the claim); a check toward all of them but the server, which it never connects to. Restores are
not capped: someone is waiting for them.

A run that a cap holds back waits, in slot order, and keeps its slot:
- `admit` says whether a due run may start now. It may not while any of its keys is at its cap, nor while an
  earlier run (by slot, then name) waits on one of its keys and could start now: a freed place goes to the run that
  has waited longest, not to whichever reconcile comes first.
- A run admitted is counted at once (a reservation, until the Job's own watch event arrives), so two reconciles in
  the same moment cannot both take the last place.
- When a Job ends (or is gone), `finished` gives back its places and names the waiting runs to look at again, the
  earliest first: as many as there are free places, so that a freed place is taken within one reconcile.
Counts are rebuilt from the Jobs' watch after a restart (every Job is seen as added), so a new leader starts from
what runs, not from zero.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from common.constants import GROUP

__all__ = ["ANNOTATION_CAPS", "Capacity", "Caps", "keys_of"]

ANNOTATION_CAPS: Final = f"{GROUP}/caps"  # the Job's cap keys, space-separated

Key = tuple[str, str]  # (namespace, name) of a DatabaseBackup
Waiter = tuple[str, str, str]  # (slot as RFC 3339, namespace, name): sorts by slot, then by name


@dataclass(frozen=True)
class Caps:
    """At most this many Jobs running at once (None: no cap)."""

    cluster: int | None = None
    namespace: int | None = None
    server: int | None = 1
    storage: int | None = None

    def limit(self, key: str) -> int | None:
        return getattr(self, key.split(":", 1)[0])  # type: ignore[no-any-return]

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.cluster, self.namespace, self.server, self.storage))


def keys_of(namespace: str, server: str | None, storage: str) -> tuple[str, ...]:
    """A run's cap keys: `server` None for a check (it never connects to the database)."""
    keys = ["cluster:", f"namespace:{namespace}", f"storage:{storage}"]
    if server is not None:
        keys.insert(2, f"server:{namespace}/{server}")
    return tuple(keys)


def describe(key: str, limit: int) -> str:
    kind, _, what = key.partition(":")
    runs = "1 running backup or check" if limit == 1 else f"{limit} running backups and checks"
    where = {
        "cluster": "in the cluster",
        "namespace": f"in namespace {what}",
        "server": f"per database server ({what})",
        "storage": f"per storage endpoint ({what})",
    }[kind]
    return f"the cap of {runs} {where}"


@dataclass
class Capacity:
    caps: Caps = field(default_factory=Caps)
    running: Counter[str] = field(default_factory=Counter)
    _jobs: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)  # active or reserved Job: its keys
    _waiting: dict[Key, tuple[Waiter, tuple[str, ...]]] = field(default_factory=dict)
    _queues: dict[str, list[Waiter]] = field(default_factory=dict)  # per capped key, the waiters in slot order
    wake: list[Key] = field(default_factory=list)  # earlier waiters that `admit` let go first (`woken`)

    def seen(self, job: Mapping[str, Any], active: bool) -> list[Key]:
        """A Job as the watch reports it; the waiting runs to look at again (when it ended)."""
        metadata = job.get("metadata") or {}
        name = (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))
        if active:
            if name not in self._jobs:
                keys = tuple(str((metadata.get("annotations") or {}).get(ANNOTATION_CAPS) or "").split())
                self._jobs[name] = keys
                self.running.update(keys)
            return []
        return self.finished(name)

    def finished(self, job: tuple[str, str]) -> list[Key]:
        keys = self._jobs.pop(job, None)
        if keys is None:
            return []
        self.running.subtract(keys)
        return self._next_waiters(keys)

    def admit(self, who: Key, slot: str, job: tuple[str, str], keys: tuple[str, ...]) -> str | None:
        """None, and the run is counted (reserved as `job`), when it may start now; else what holds it back, and it
        waits (in slot order) until `finished` names it."""
        if job in self._jobs:
            return None  # already counted: its Job exists
        me: Waiter = (slot, *who)
        held = self._waiting.get(who)
        if held is not None and held[0] < me:
            # It keeps the place in line it had: an on-demand run's time is the moment of each look, and a run
            # whose slot was overtaken by the next one has waited since the first.
            me = held[0]
        blocker = self._full(keys) or self._earlier(me, keys)
        if blocker is not None:
            self._wait(who, me, keys)
            return blocker
        self._leave(who)
        self._jobs[job] = keys
        self.running.update(keys)
        return None

    def forget(self, who: Key) -> None:
        """A DatabaseBackup deleted, or no longer owed a run: it waits for nothing."""
        self._leave(who)

    def release(self, job: tuple[str, str]) -> list[Key]:
        """A reservation whose Job was not created after all."""
        return self.finished(job)

    def waiting(self, who: Key) -> bool:
        return who in self._waiting

    # --- inside ---------------------------------------------------------------------------------------------

    def _full(self, keys: Iterable[str]) -> str | None:
        for key in keys:
            limit = self.caps.limit(key)
            if limit is not None and self.running[key] >= limit:
                return describe(key, limit)
        return None

    def _earlier(self, me: Waiter, keys: Iterable[str]) -> str | None:
        """An earlier waiter sharing a capped key that could start now: it goes first, and is named in `wake` so
        that it looks again now (nothing else may bring it back)."""
        for key in keys:
            if self.caps.limit(key) is None:
                continue
            for waiter in self._queues.get(key, ()):
                if waiter >= me:
                    break
                _, their_keys = self._waiting[waiter[1:]]
                if self._full(their_keys) is None:
                    self.wake.append((waiter[1], waiter[2]))
                    return f"an earlier run ({waiter[1]}/{waiter[2]}, due {waiter[0]}) that starts first"
        return None

    def woken(self) -> list[Key]:
        """The waiters `admit` found should go first: to look at again now."""
        found, self.wake = self.wake, []
        return found

    def _wait(self, who: Key, me: Waiter, keys: tuple[str, ...]) -> None:
        if self._waiting.get(who) == (me, keys):
            return
        self._leave(who)
        self._waiting[who] = (me, keys)
        for key in keys:
            if self.caps.limit(key) is not None:
                bisect.insort(self._queues.setdefault(key, []), me)

    def _leave(self, who: Key) -> None:
        found = self._waiting.pop(who, None)
        if found is None:
            return
        me, keys = found
        for key in keys:
            queue = self._queues.get(key)
            if queue is None:
                continue
            index = bisect.bisect_left(queue, me)
            if index < len(queue) and queue[index] == me:
                del queue[index]
            if not queue:
                del self._queues[key]

    def _next_waiters(self, keys: Iterable[str]) -> list[Key]:
        """The earliest waiters on `keys` that could start now (none of their other keys full), as many per key as
        it has free places."""
        found: list[Key] = []
        for key in keys:
            limit = self.caps.limit(key)
            if limit is None:
                continue
            free = limit - self.running[key]
            for waiter in self._queues.get(key, ()):
                if free <= 0:
                    break
                who = waiter[1:]
                if who not in found and self._full(self._waiting[who][1]) is None:
                    found.append(who)
                    free -= 1
        return found
