"""Entering the cluster's network namespace from Python, and the namespace's own layout."""

from __future__ import annotations

import ctypes
import os
import subprocess
from pathlib import Path

from hack.cluster import config

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")


def path(name: str = config.NETNS) -> Path:
    return NETNS_DIR / name


def exists(name: str = config.NETNS) -> bool:
    return path(name).exists()


def enter(name: str = config.NETNS) -> None:
    """Move the calling thread (the whole process, when it has one thread) into the network namespace. Sockets
    opened earlier stay in the namespace they were made in: that is how the forwarder listens on the host's
    loopback and connects inside the cluster. Python 3.11 has no os.setns, hence libc."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path(name), os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {path(name)}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A command inside the namespace (for `ip`, `sysctl`: `ip netns exec` also remounts /sys for it)."""
    return subprocess.run(["ip", "netns", "exec", config.NETNS, *argv], capture_output=True, text=True, check=check)


def create() -> None:
    """The namespace with its loopback up, the node's address on an interface of its own, and a default route into
    that interface: every destination is routable (Service IPs must be, before kube-proxy's DNAT rewrites them),
    and nothing routed ever leaves. The interface is a bridge with no ports: it is up and carries the address, and
    what is sent into it goes nowhere (this kernel has no `dummy` driver, and loads no modules)."""
    subprocess.run(["ip", "netns", "add", config.NETNS], check=True, capture_output=True, text=True)
    run("ip", "link", "set", "lo", "up")
    run("ip", "link", "add", config.NODE_INTERFACE, "type", "bridge")
    run("ip", "addr", "add", f"{config.NODE_IP}/{config.NODE_PREFIX}", "dev", config.NODE_INTERFACE)
    run("ip", "link", "set", config.NODE_INTERFACE, "up")
    run("ip", "route", "add", "default", "dev", config.NODE_INTERFACE)
    # Forwarding between the Pod bridge and the node, and bridged Pod traffic through iptables (kube-proxy's Service
    # rules): both only in this namespace, the host's own settings stay as they are.
    run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    if run("sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1", check=False).returncode != 0:
        subprocess.run(["modprobe", "br_netfilter"], check=False, capture_output=True)
        run("sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1")
    run("sysctl", "-q", "-w", "net.ipv4.conf.all.route_localnet=1")


def delete() -> None:
    """Deleting the namespace deletes every interface in it: the dummy, the Pod bridge and each Pod's veth."""
    if exists():
        subprocess.run(["ip", "netns", "delete", config.NETNS], check=False, capture_output=True)
