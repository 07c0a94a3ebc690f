"""Where the sandbox keeps its state: one folder, `.dev/` in the repository unless `$DBB_DEV_DIR` names another."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ENV_VAR", "ROOT", "DevDir", "shown"]

ROOT = Path(__file__).resolve().parents[2]
ENV_VAR = "DBB_DEV_DIR"


@dataclass(frozen=True)
class DevDir:
    root: Path

    @classmethod
    def from_env(cls) -> DevDir:
        given = os.environ.get(ENV_VAR)
        return cls(Path(given).resolve() if given else ROOT / ".dev")

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def backups(self) -> Path:
        return self.root / "backups"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def cluster(self) -> Path:
        """The control plane's folder (etcd data, its PKI, its logs): wiped at each start."""
        return self.root / "cluster"

    @property
    def object_store(self) -> Path:
        """SeaweedFS's data: kept across restarts, like the backups folder."""
        return self.root / "seaweedfs"

    @property
    def s3_env(self) -> Path:
        """`export AWS_...` lines for the sandbox's store, for `dbb-backup list|verify|restore s3://...`."""
        return self.root / "s3.env"

    @property
    def webhook_tls(self) -> Path:
        return self.root / "webhook-tls"

    @property
    def reconciler_tls(self) -> Path:
        """The certificate of the reconciler's health port."""
        return self.root / "reconciler-tls"

    @property
    def records(self) -> Path:
        """One pid record per running process."""
        return self.root / "run"

    @property
    def state(self) -> Path:
        return self.root / "sandbox.json"

    @property
    def lock(self) -> Path:
        """Held by the running supervisor: the kernel releases it however the supervisor ends."""
        return self.root / "sandbox.lock"

    @property
    def supervisor_log(self) -> Path:
        return self.logs / "sandbox.log"


def shown(path: Path) -> str:
    """A path as a user types it: relative to the current folder when inside it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
