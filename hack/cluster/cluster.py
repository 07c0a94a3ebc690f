"""`make cluster-up` / `make cluster-down`: a single-node Kubernetes cluster on this machine, inside a network
namespace of its own.

up, in order (each step timed): clean whatever an earlier run left; binaries (hack/cluster/build.sh) and images
(hack/cluster/images.sh), both cached under ~/.cache/dbb-cluster; the network namespace; certificates and
kubeconfigs; containerd, with every image imported; etcd and the API server, then the host's loopback forwarder;
controller-manager, scheduler, kubelet, kube-proxy; wait for the node to be Ready; CoreDNS and the local-path
provisioner (the default StorageClass); wait until DNS answers and a PVC binds.

down: stop every process in the cluster's cgroups (daemons, shims and containers alike), unmount everything under
the cluster's folders, delete the network namespace (and with it every veth and the bridge), remove the cgroups
and the folders, then check that nothing is left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import ssl
import string
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from hack.cluster import cgroups, components, config, netns
from hack.cluster.config import Paths
from hack.cluster.pki import ClusterPKI

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PYTHON = sys.executable


class ClusterError(RuntimeError):
    pass


class Fatal(ClusterError):
    """A check that can never turn true any more: stop waiting."""


def log(message: str) -> None:
    print(f"cluster: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def step(name: str, timings: list[tuple[str, float]]) -> Iterator[None]:
    started = time.monotonic()
    log(f"{name} ...")
    yield
    elapsed = time.monotonic() - started
    timings.append((name, elapsed))
    log(f"{name}: {elapsed:.1f}s")


def wait_for(what: str, check: Callable[[], bool], timeout: float, logs: Sequence[Path] = ()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Fatal:
            raise
        except Exception:  # noqa: S110 (not there yet: a connection refused, an object not created yet)
            pass
        time.sleep(0.5)
    tails = "\n".join(f"--- {path}:\n{_tail(path)}" for path in logs)
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- processes -------------------------------------------------------------------------------------------------


def _enter_cluster() -> None:
    """In the child between fork and exec: join the cluster's cgroups and its network namespace (only the network:
    kubelet and containerd must share the host's mount namespace, so that volumes kubelet mounts are the ones runc
    bind-mounts into containers)."""
    cgroups.join_system()
    netns.enter()


def start(
    paths: Paths, name: str, argv: Sequence[str], *, in_netns: bool = True, env: dict[str, str] | None = None
) -> int:
    paths.logs.mkdir(parents=True, exist_ok=True)
    paths.pids.mkdir(parents=True, exist_ok=True)
    with (paths.logs / f"{name}.log").open("ab") as log_file:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_enter_cluster if in_netns else cgroups.join_system,
            cwd=paths.state,
            env=env,
        )
    (paths.pids / f"{name}.pid").write_text(str(process.pid))
    return process.pid


# --- up --------------------------------------------------------------------------------------------------------


def _binaries() -> Path:
    result = subprocess.run(["bash", str(HERE / "build.sh")], stdout=subprocess.PIPE, text=True, check=True)
    return Path(result.stdout.strip().splitlines()[-1])


def _images(binaries: Path) -> dict[str, Path]:
    result = subprocess.run(
        ["bash", str(HERE / "images.sh"), str(binaries)], stdout=subprocess.PIPE, text=True, check=True
    )
    images = {}
    for line in result.stdout.splitlines():
        reference, _, archive = line.strip().partition(" ")
        if reference and archive:
            images[reference] = Path(archive)
    return images


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _certificates(paths: Paths) -> None:
    pki = ClusterPKI(paths.pki)
    server_names = (
        config.NODE_IP,
        config.API_SERVICE_IP,
        "127.0.0.1",
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{config.CLUSTER_DOMAIN}",
    )
    pki.issue("apiserver", "kube-apiserver", server_names=server_names, client=False)
    pki.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", organization="system:masters")
    pki.service_account_keys()
    inside = f"https://{config.NODE_IP}:{config.API_PORT}"
    clients = {
        "admin": ("kubernetes-admin", "system:masters"),
        "controller-manager": ("system:kube-controller-manager", None),
        "scheduler": ("system:kube-scheduler", None),
        "kubelet": (f"system:node:{config.NODE_NAME}", "system:nodes"),
        "kube-proxy": ("system:kube-proxy", None),
    }
    for name, (user, group) in clients.items():
        issued = pki.issue(name, user, organization=group)
        text = components.kubeconfig(inside, pki.ca_cert, issued.cert, issued.key, user)
        _write(paths.state / f"{name}.kubeconfig", text, 0o600)
    admin = pki.folder / "admin"
    host = f"https://127.0.0.1:{config.HOST_API_PORT}"
    text = components.kubeconfig(host, pki.ca_cert, admin.with_suffix(".crt"), admin.with_suffix(".key"), "admin")
    _write(paths.kubeconfig, text, 0o600)


def _api_ready(paths: Paths) -> bool:
    context = ssl.create_default_context(cafile=str(paths.pki / "ca.crt"))
    context.load_cert_chain(str(paths.pki / "admin.crt"), str(paths.pki / "admin.key"))
    url = f"https://127.0.0.1:{config.HOST_API_PORT}/readyz"
    with urllib.request.urlopen(url, context=context, timeout=3) as response:
        return bool(response.status == 200)


def kubectl(paths: Paths, binaries: Path, *args: str, input_text: str | None = None) -> str:
    result = subprocess.run(
        [str(binaries / "kubectl"), f"--kubeconfig={paths.kubeconfig}", *args],
        input=input_text,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _addon(name: str, paths: Paths) -> str:
    template = string.Template((HERE / "addons" / f"{name}.yaml").read_text())
    return template.substitute(DNS_SERVICE_IP=config.DNS_SERVICE_IP, LOCAL_PATH_DIR=str(paths.local_path))


def up(paths: Paths) -> list[tuple[str, float]]:
    timings: list[tuple[str, float]] = []
    with step("clean up what an earlier run left", timings):
        down(paths, quiet=True)
    with step("Debian packages (containerd, runc, CNI plugins, iptables)", timings):
        subprocess.run(["bash", str(HERE / "packages.sh")], check=True)
    with step("binaries (built from Go modules, cached)", timings):
        binaries = _binaries()
    with step("images (debootstrap + buildah, cached)", timings):
        images = _images(binaries)
    sandbox = next((ref for ref in images if "/pause:" in ref), None)
    if sandbox is None:
        raise ClusterError("hack/cluster/images.sh built no pause image")
    with step("network namespace, cgroups, certificates, configuration", timings):
        for folder in (paths.state, paths.run, paths.local_path, paths.pod_logs, paths.cni_conf):
            folder.mkdir(parents=True, exist_ok=True)
        netns.create()
        cgroups.create()
        for hierarchy in cgroups.hierarchies():
            # kubelet's cgroupRoot must exist in every hierarchy before it starts.
            (cgroups.root(hierarchy) / "kubepods").mkdir(exist_ok=True)
        _certificates(paths)
        _write(paths.state / "containerd.toml", components.containerd_config(paths, sandbox))
        _write(paths.cni_conf / "10-dbb.conflist", components.cni_config(paths))
        _write(paths.state / "kubelet.yaml", components.kubelet_config(paths))
        _write(paths.state / "kube-proxy.yaml", components.kube_proxy_config(paths))
        # Pods with dnsPolicy Default (CoreDNS itself) get this; there is no upstream resolver in here.
        _write(paths.state / "resolv.conf", "nameserver 127.0.0.1\noptions ndots:1\n")
    by_name = {c.name: c for c in components.components(paths, binaries)}
    with step("containerd, and every image imported", timings):
        start(paths, "containerd", by_name["containerd"].argv)
        wait_for("containerd's socket", paths.containerd_socket.exists, 30, [paths.logs / "containerd.log"])
        import_images(paths, images)
    with step("etcd and kube-apiserver", timings):
        start(paths, "etcd", by_name["etcd"].argv)
        start(paths, "kube-apiserver", by_name["kube-apiserver"].argv)
        forward_env = {**os.environ, "PYTHONPATH": str(ROOT)}
        start(paths, "forward", [PYTHON, "-m", "hack.cluster.forward"], in_netns=False, env=forward_env)
        wait_for("the API server", lambda: _api_ready(paths), 120, [paths.logs / "kube-apiserver.log"])
    with step("controller-manager, scheduler, kubelet, kube-proxy; node Ready", timings):
        for name in ("kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"):
            start(paths, name, by_name[name].argv)
        wait_for(
            f"node {config.NODE_NAME} Ready",
            lambda: (
                kubectl(
                    paths,
                    binaries,
                    "get",
                    "node",
                    config.NODE_NAME,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                ).strip()
                == "True"
            ),
            120,
            [paths.logs / "kubelet.log"],
        )
    with step("CoreDNS and the local-path provisioner", timings):
        for addon in ("coredns", "local-path"):
            kubectl(paths, binaries, "apply", "--server-side", "-f", "-", input_text=_addon(addon, paths))
        for namespace, deployment in (("kube-system", "coredns"), ("local-path-storage", "local-path-provisioner")):
            kubectl(paths, binaries, "-n", namespace, "rollout", "status", f"deployment/{deployment}", "--timeout=180s")
    with step("a Pod resolves a Service through DNS and writes to a PVC", timings):
        _smoke(paths, binaries)
    log(f"kubeconfig: {paths.kubeconfig}")
    return timings


def import_images(paths: Paths, images: dict[str, Path]) -> None:
    """Import into containerd's `k8s.io` namespace (the one CRI uses) each image it does not hold yet."""
    ctr = ["ctr", "--address", str(paths.containerd_socket), "-n", "k8s.io"]
    present = set(
        subprocess.run([*ctr, "images", "ls", "-q"], capture_output=True, text=True, check=True).stdout.split()
    )
    for reference, archive in images.items():
        if reference in present:
            continue
        result = subprocess.run([*ctr, "images", "import", str(archive)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ClusterError(f"importing {archive}: {result.stderr.strip()}")
        log(f"  imported {reference}")


def load(paths: Paths) -> dict[str, str]:
    """Build what changed (the operator image, after an edit) and import it into the running cluster; returns the
    references the e2e suite needs: E2E_IMG for `make deploy IMG=...`, E2E_OLD_CLIENT_IMG, the same code with
    PostgreSQL 15's client tools, E2E_SEAWEEDFS_IMG, the object store it backs up to over S3, and E2E_PROMETHEUS_IMG,
    the Prometheus that scrapes the reconciler and evaluates the alert rules."""
    if not paths.containerd_socket.exists():
        raise ClusterError("the local cluster is not running: make cluster-up")
    images = _images(_binaries())
    import_images(paths, images)
    found = {}
    wanted = (
        ("E2E_IMG", "/databasebackup-operator:"),
        ("E2E_OLD_CLIENT_IMG", "-pg15:"),
        ("E2E_SEAWEEDFS_IMG", "/seaweedfs:"),
        ("E2E_PROMETHEUS_IMG", "/prometheus:"),
    )
    for variable, repository in wanted:
        matches = [ref for ref in images if repository in ref]
        if len(matches) != 1:
            raise ClusterError(f"expected one {repository} image from hack/cluster/images.sh, got {matches}")
        found[variable] = matches[0]
    return found


def _smoke(paths: Paths, binaries: Path) -> None:
    kubectl(paths, binaries, "apply", "-f", "-", input_text=_addon("smoke", paths))

    def finished() -> bool:
        phase = kubectl(
            paths, binaries, "-n", "dbb-cluster-smoke", "get", "pod", "smoke", "-o", "jsonpath={.status.phase}"
        )
        if phase == "Failed":
            logs = kubectl(paths, binaries, "-n", "dbb-cluster-smoke", "logs", "smoke")
            raise Fatal(f"the smoke Pod failed: {logs}")
        return phase == "Succeeded"

    try:
        wait_for("the smoke Pod (PVC bound, DNS answering)", finished, 180, [paths.logs / "kubelet.log"])
    finally:
        kubectl(paths, binaries, "delete", "namespace", "dbb-cluster-smoke", "--wait=false")


# --- down ------------------------------------------------------------------------------------------------------


def _mounts_under(folders: Sequence[Path]) -> list[str]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # The mount point is field 5, with spaces and such escaped as octal.
        point = line.split()[4].encode().decode("unicode_escape")
        if any(point == str(f) or point.startswith(f"{f}/") for f in folders):
            found.append(point)
    return found


def _kill_everything(paths: Paths) -> None:
    # kubelet first, so it restarts nothing while the rest goes; then everything in our cgroups (daemons,
    # containerd's shims, every container), until none is left: a process can fork while it is being killed.
    with contextlib.suppress(OSError, ValueError):
        os.kill(int((paths.pids / "kubelet.pid").read_text()), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while (left := cgroups.pids()) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def down(paths: Paths, *, quiet: bool = False) -> None:
    _kill_everything(paths)
    folders = [paths.state, paths.run]
    for _ in range(5):
        mounts = _mounts_under(folders)
        if not mounts:
            break
        for point in sorted(mounts, key=lambda p: p.count("/"), reverse=True):
            subprocess.run(["umount", point], check=False, capture_output=True)
    for point in _mounts_under(folders):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    netns.delete()
    left = cgroups.remove()
    # kubelet links each container's log into /var/log/containers (a fixed path); remove the links into our folder.
    with contextlib.suppress(OSError):
        for link in Path("/var/log/containers").iterdir():
            with contextlib.suppress(OSError):
                if link.is_symlink() and str(paths.pod_logs) in str(link.readlink()):
                    link.unlink()
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    problems = [f"process {pid} still in the cluster's cgroups" for pid in cgroups.pids()]
    problems += [f"still mounted: {point}" for point in _mounts_under(folders)]
    problems += [f"cgroup not removed: {entry}" for entry in left]
    if netns.exists():
        problems.append(f"network namespace {config.NETNS} still exists")
    problems += [f"folder still exists: {folder}" for folder in folders if folder.exists()]
    if problems:
        raise ClusterError("cluster-down left things behind:\n  " + "\n  ".join(problems))
    if not quiet:
        log("down: no process, mount, network namespace, veth or cgroup of the cluster is left")
