"""A real Kubernetes control plane for tests and the local sandbox: etcd + kube-apiserver, as controller-runtime's
envtest runs them. No kubelet and no controller-manager: Jobs never get Pods, namespaces are never finalized,
garbage collection never runs.

    with ControlPlane.start(assets) as cp:
        cp.kubectl("get", "ns")

Everything listens on 127.0.0.1 only. TLS everywhere the API server speaks it, with certificates from our own
`certs` code; clients authenticate with a client certificate of a user in group `system:masters`.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from certs.pki import KeyPair, issue, new_ca, new_key, write_private, write_public
from common.constants import CRD_NAME, POLICY_CRD_NAME, RESTORE_CRD_NAME, STORE_CRD_NAME

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "deploy" / "crd" / "databases.test.io_databasebackups.yaml"
RESTORE_CRD_FILE = ROOT / "deploy" / "crd" / "databases.test.io_databaserestores.yaml"
STORE_CRD_FILE = ROOT / "deploy" / "crd" / "databases.test.io_backupstores.yaml"
POLICY_CRD_FILE = ROOT / "deploy" / "crd" / "databases.test.io_databasebackuppolicies.yaml"
WEBHOOKS = ROOT / "deploy" / "webhook" / "webhooks.yaml"
ADMIN_USER = "envtest-admin"
START_TIMEOUT = 90.0


class ControlPlaneError(RuntimeError):
    pass


def find_assets() -> Path:
    """The folder with kube-apiserver and etcd: $KUBEBUILDER_ASSETS, else what `hack/envtest.sh` built or cached."""
    result = subprocess.run(["bash", str(ROOT / "hack" / "envtest.sh")], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ControlPlaneError(f"hack/envtest.sh failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class ControlPlane:
    assets: Path
    workdir: Path
    host: str = "127.0.0.1"
    api_port: int = 0
    etcd_port: int = 0
    ca: KeyPair | None = None
    admin: KeyPair | None = None
    processes: list[_Process] = field(default_factory=list)
    extra_args: tuple[str, ...] = ()
    _owns_workdir: bool = False

    # --- lifecycle --------------------------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        assets: Path | None = None,
        workdir: Path | None = None,
        *,
        install_crd: bool = True,
        extra_args: Sequence[str] = (),
    ) -> Self:
        """`extra_args` go to kube-apiserver (e.g. `--watch-cache=false`)."""
        owned = workdir is None
        plane = cls(
            assets or find_assets(),
            workdir or Path(tempfile.mkdtemp(prefix="dbb-envtest-")),
            extra_args=tuple(extra_args),
        )
        plane._owns_workdir = owned
        try:
            plane._start(install_crd=install_crd)
        except BaseException:
            plane.stop()
            raise
        return plane

    def _start(self, *, install_crd: bool) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._make_certificates()
        self.etcd_port = free_port()
        self._spawn(
            "etcd",
            [
                str(self.assets / "etcd"),
                "--name=envtest",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://{self.host}:{self.etcd_port}",
                f"--advertise-client-urls=http://{self.host}:{self.etcd_port}",
                f"--listen-peer-urls=http://{self.host}:{free_port()}",
                "--listen-metrics-urls=",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self.api_port = free_port()
        pki = self.workdir / "pki"
        self._spawn(
            "kube-apiserver",
            [
                str(self.assets / "kube-apiserver"),
                f"--etcd-servers=http://{self.host}:{self.etcd_port}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--secure-port={self.api_port}",
                f"--bind-address={self.host}",
                f"--advertise-address={self.host}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--authorization-mode=RBAC",
                # No controller creates the default ServiceAccount, so the plugin would refuse every Pod.
                "--disable-admission-plugins=ServiceAccount",
                f"--service-account-issuer=https://{self.host}:{self.api_port}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--endpoint-reconciler-type=none",
                "--v=1",
                *self.extra_args,
            ],
        )
        self._wait_ready()
        self.write_kubeconfig(self.kubeconfig)
        if install_crd:
            self.install_crd()

    def stop(self) -> None:
        """Stop every process (apiserver first, then etcd), waiting for each; remove what we created."""
        for process in reversed(self.processes):
            terminate(process.popen)
        self.processes.clear()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    # --- access ---------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.api_port}"

    @property
    def kubectl_path(self) -> str:
        """kubectl at the API server's version from the assets folder (as envtest ships it), else PATH's."""
        bundled = self.assets / "kubectl"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
        found = shutil.which("kubectl")
        if found is None:
            raise ControlPlaneError(f"no kubectl in {self.assets} or on PATH; run `make envtest`")
        return found

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        pki = self.workdir / "pki"
        context.load_cert_chain(pki / "admin.crt", pki / "admin.key")
        return context

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path)  # noqa: S310 - https to our own loopback server
        try:
            with urllib.request.urlopen(request, context=self.ssl_context(), timeout=timeout) as response:  # noqa: S310
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.kubectl_path, f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=_kubectl_env(),
        )
        if check and result.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def write_kubeconfig(self, path: Path, *, context: str = "envtest") -> None:
        assert self.ca is not None
        assert self.admin is not None
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": context,
                    "cluster": {"server": self.url, "certificate-authority-data": _b64(self.ca.cert_pem)},
                }
            ],
            "users": [
                {
                    "name": ADMIN_USER,
                    "user": {
                        "client-certificate-data": _b64(self.admin.cert_pem),
                        "client-key-data": _b64(self.admin.key_pem),
                    },
                }
            ],
            "contexts": [{"name": context, "context": {"cluster": context, "user": ADMIN_USER}}],
            "current-context": context,
        }
        write_private(path, yaml.safe_dump(config).encode())

    def install_crd(self, path: Path = CRD_FILE) -> None:
        """The DatabaseBackup CRD (`path`), and with the default the DatabaseRestore, BackupStore and
        DatabaseBackupPolicy CRDs too."""
        self.kubectl("apply", "--server-side", "-f", str(path))
        names = [CRD_NAME]
        if path == CRD_FILE:
            others = (RESTORE_CRD_FILE, STORE_CRD_FILE, POLICY_CRD_FILE)
            self.kubectl("apply", "--server-side", *(arg for file in others for arg in ("-f", str(file))))
            names += [RESTORE_CRD_NAME, STORE_CRD_NAME, POLICY_CRD_NAME]
        for name in names:
            self.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
        self._wait_served()

    # --- internals ------------------------------------------------------------------------------------------

    def _make_certificates(self) -> None:
        pki = self.workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        self.ca = new_ca("envtest-ca")
        serving = issue(self.ca, "kube-apiserver", hosts=[self.host, "localhost", "::1", "kubernetes.default.svc"])
        self.admin = issue(self.ca, ADMIN_USER, organizations=["system:masters"], server=False, client=True)
        service_accounts = new_key()
        from cryptography.hazmat.primitives import serialization

        write_public(pki / "ca.crt", self.ca.cert_pem)
        write_public(pki / "apiserver.crt", serving.cert_pem)
        write_private(pki / "apiserver.key", serving.key_pem)
        write_public(pki / "admin.crt", self.admin.cert_pem)
        write_private(pki / "admin.key", self.admin.key_pem)
        write_private(
            pki / "sa.key",
            service_accounts.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
        write_public(
            pki / "sa.pub",
            service_accounts.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )

    def _spawn(self, name: str, argv: Sequence[str]) -> None:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,
            )
        self.processes.append(_Process(name, popen, log))

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.popen.poll() is not None:
                    raise ControlPlaneError(f"{process.name} exited with {process.popen.returncode}:\n{process.tail()}")
            try:
                status, body = self.get("/readyz", timeout=2.0)
                if status == 200:
                    return
                last = f"/readyz answered {status}: {body[-300:].decode(errors='replace')}"
            except (OSError, ssl.SSLError) as error:
                last = str(error)
            time.sleep(0.2)
        raise ControlPlaneError(
            f"kube-apiserver not ready after {START_TIMEOUT:.0f}s ({last}):\n{self.processes[-1].tail()}"
        )

    def _wait_served(self) -> None:
        """Established is not quite served: the list endpoint and the OpenAPI document (which `kubectl explain`
        and server-side apply read) follow a moment later. Wait for both."""
        deadline = time.monotonic() + 30
        wanted = {
            "/apis/databases.test.io/v1/databasebackups": b"",
            "/openapi/v3/apis/databases.test.io/v1": b"DatabaseBackup",
        }
        if self.kubectl("get", "crd", RESTORE_CRD_NAME, check=False).returncode == 0:
            wanted["/apis/databases.test.io/v1/databaserestores"] = b""
        for path, needle in wanted.items():
            while True:
                status, body = self.get(path)
                if status == 200 and needle in body:
                    break
                if time.monotonic() > deadline:
                    raise ControlPlaneError(f"{path} not served within 30s of the CRD being Established")
                time.sleep(0.1)


def terminate(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Stop a child of ours and its process group: SIGTERM, then SIGKILL after `grace` seconds."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    # The leader is gone; anything it left in its group (a dbb-backup run, its pg_dump) goes with it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def webhook_registration(
    port: int, ca_file: Path, *, namespace_selector: dict[str, Any] | None = None, source: Path = WEBHOOKS
) -> list[dict[str, Any]]:
    """The configurations of `deploy/webhook/webhooks.yaml`, each Service reference rewritten to our loopback URL
    with our CA, as envtest registers webhooks. A namespace selector limits what they judge (tests only)."""
    bundle = base64.b64encode(ca_file.read_bytes()).decode()
    documents = []
    for document in load_yaml_documents(source):
        document = copy.deepcopy(document)
        for hook in document["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": bundle}
            if namespace_selector is not None:
                hook["namespaceSelector"] = namespace_selector
        documents.append(document)
    return documents


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _kubectl_env() -> dict[str, str]:
    env = dict(os.environ)
    # kubectl must not wander to a user's real cluster or cache discovery in their home.
    env.pop("KUBECONFIG", None)
    env["KUBECACHEDIR"] = str(Path(tempfile.gettempdir()) / "dbb-kubectl-cache")
    return env


def load_yaml_documents(path: Path) -> Iterator[dict[str, Any]]:
    for document in yaml.safe_load_all(path.read_text()):
        if document:
            yield document
