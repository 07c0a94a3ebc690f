"""The e2e suite's view of a cluster: kubectl against one kubeconfig, and waiting for conditions.

Everything goes through kubectl, as an admin would type it: what the suite proves is what a user sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class KubectlError(RuntimeError):
    def __init__(self, args: Sequence[str], returncode: int, stderr: str) -> None:
        super().__init__(f"kubectl {' '.join(args)} exited {returncode}: {stderr.strip()}")
        self.stderr = stderr
        self.returncode = returncode


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 180.0, interval: float = 1.0) -> T:
    """Poll `check` until it returns something truthy; fail with what was awaited and the last error seen. Timing
    never decides a test: the deadline is generous, and it is only reached when the condition never comes."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except (KubectlError, KeyError, IndexError, ValueError, TypeError) as error:
            last = error
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last: {last})" if last else "")
            )
        time.sleep(interval)


@dataclass(frozen=True)
class Kube:
    kubeconfig: Path
    kubectl_binary: str = "kubectl"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def run(
        self, *args: str, input_text: str | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.kubectl_binary, *args],
            input=input_text,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise KubectlError(args, result.returncode, result.stderr)
        return result

    def __call__(self, *args: str, input_text: str | None = None) -> str:
        return self.run(*args, input_text=input_text).stdout

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        scope = ["-n", namespace] if namespace else []
        result: dict[str, Any] = self.json("get", kind, name, *scope)
        return result

    def items(self, kind: str, namespace: str | None = None, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, *(["-n", namespace] if namespace else ["-A"])]
        if selector:
            args += ["-l", selector]
        items: list[dict[str, Any]] = self.json(*args)["items"]
        return items

    def apply(self, *documents: dict[str, Any], server_side: bool = True) -> str:
        text = yaml.safe_dump_all(documents, sort_keys=False)
        flags = ["--server-side", "--force-conflicts"] if server_side else []
        return self("apply", *flags, "-f", "-", input_text=text)

    def try_apply(self, document: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.run("apply", "-f", "-", input_text=yaml.safe_dump(document), check=False)

    def exists(self, kind: str, name: str, namespace: str | None = None) -> bool:
        scope = ["-n", namespace] if namespace else []
        return self.run("get", kind, name, *scope, check=False).returncode == 0

    def events(self, namespace: str, involved: str | None = None) -> list[dict[str, Any]]:
        events = self.items("events", namespace)
        if involved:
            events = [e for e in events if e.get("involvedObject", {}).get("name") == involved]
        return events

    def logs(self, namespace: str, pod: str, *, container: str | None = None, previous: bool = False) -> str:
        args = ["logs", "-n", namespace, pod]
        if container:
            args += ["-c", container]
        if previous:
            args.append("--previous")
        return self.run(*args, check=False).stdout

    def wait_rollout(self, namespace: str, kind_name: str, timeout: int = 300) -> None:
        self.run("-n", namespace, "rollout", "status", kind_name, f"--timeout={timeout}s", timeout=timeout + 60)
