"""The PostgreSQL replay server of a point-in-time restore (pure): the source's own image beside the runner in the
restore Job's Pod, started on the data directory the runner unpacks from a base backup.

A MariaDB replay starts from an empty server the image initialises itself (`jobs._with_scratch_server`). A
PostgreSQL one cannot: its server must start on the base backup's files, with recovery settings, and perhaps twice
(`runner/pgpitr.py`, step 3). So its sidecar runs no entrypoint of the image but SUPERVISOR, a fixed POSIX shell
script, which starts the image's `postgres` when the runner asks, in one shared emptyDir (REPLAY_DIR, mounted at
the same path in both containers):

- `start.N` (N = 1, 2, ...): the runner asks for start N; the file holds postgres's arguments, one per line. They
  are read with `read -r` into "$@", never evaluated: nothing in them reaches a shell.
- `stop.N`: the runner asks start N's server to stop (SIGINT, PostgreSQL's fast shutdown).
- `exited.N`: the sidecar says start N's server has exited, with its exit status.
- `done`: the runner has finished; the sidecar stops whatever runs and starts nothing more. It exits only when
  the kubelet stops it (SIGTERM, once the runner's container has ended): a native sidecar that exits by itself is
  restarted, and one that keeps restarting holds the Pod, and so the Job, from completing.
- `postgres.log`: the server's output, appended.

Both containers run as the Pod's user (65532), whatever the StatefulSet runs its database as: PostgreSQL starts
only on a data directory its own user owns, and the runner writes it. The server listens on no port (the runner
sets `listen_addresses` empty), only on a unix socket in REPLAY_DIR.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from common.backups.model import DatabaseBackupSpec
from reconciler.arguments import escape_expansion

__all__ = ["REPLAY_DIR", "SUPERVISOR", "with_replay_server"]

REPLAY_DIR: Final = "/replay"

# `postgres` on the image's PATH (the official images, ours), else Debian's layout (the newest major installed).
SUPERVISOR: Final = r"""set -u
cd "$1" || exit 1
server=$(command -v postgres)
if [ -z "$server" ]; then
  for found in /usr/lib/postgresql/*/bin/postgres; do [ -x "$found" ] && server=$found; done
fi
pid=
trap '[ -n "$pid" ] && kill -INT "$pid" 2>/dev/null; exit 0' TERM INT
n=1
while :; do
  if [ -e "start.$n" ] && [ ! -e done ]; then
    set --
    while IFS= read -r argument; do set -- "$@" "$argument"; done < "start.$n"
    if [ -n "$server" ]; then
      "$server" "$@" >> postgres.log 2>&1 &
      pid=$!
      while kill -0 "$pid" 2>/dev/null; do
        if [ -e "stop.$n" ] || [ -e done ]; then kill -INT "$pid" 2>/dev/null; fi
        sleep 0.2
      done
      wait "$pid"
      status=$?
      pid=
    else
      echo "no postgres in this image (not on PATH, none in /usr/lib/postgresql)" >> postgres.log
      status=127
    fi
    echo "$status" > "exited.$n.tmp"
    mv "exited.$n.tmp" "exited.$n"
    n=$((n + 1))
  fi
  sleep 0.2
done
"""


def with_replay_server(pod: dict[str, Any], image: str, spec: DatabaseBackupSpec) -> None:
    """The replay server as a native sidecar (it starts first and is stopped when the runner ends; beside a check's
    scratch server, if the Pod has one), and the runner told where it is (`--replay-dir`). Read-only root, no
    capabilities, the Pod's user (the runner's own restrictions); its only writable places are REPLAY_DIR and /tmp."""
    [container] = pod["containers"]
    security = copy.deepcopy(container["securityContext"])
    mounts = [
        {"name": "replay", "mountPath": REPLAY_DIR},
        {"name": "replay-tmp", "mountPath": "/tmp"},  # noqa: S108 - a private emptyDir
    ]
    pod.setdefault("initContainers", []).append(
        {
            "name": "replay-db",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "restartPolicy": "Always",
            "command": ["/bin/sh", "-c", escape_expansion(SUPERVISOR), "supervisor", REPLAY_DIR],
            "volumeMounts": mounts,
            "resources": spec.resources.effective(),
            "securityContext": security,
        }
    )
    pod["volumes"] += [{"name": "replay", "emptyDir": {}}, {"name": "replay-tmp", "emptyDir": {}}]
    container["volumeMounts"].append({"name": "replay", "mountPath": REPLAY_DIR})
    container["args"].append(f"--replay-dir={REPLAY_DIR}")
