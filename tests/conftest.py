"""Fixtures shared by every test folder.

`control_plane` is one real etcd + kube-apiserver per test session (about 3 s to start); each test that needs the
cluster gets a namespace of its own, so tests never see each other's objects.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from common import kube
from hack.harness.controlplane import ControlPlane
from hack.harness.objectstore import SeaweedFS


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with ControlPlane.start(workdir=tmp_path_factory.mktemp("controlplane")) as plane:
        yield plane


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:10]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    # No controller-manager runs, so the namespace would stay Terminating for ever; delete what is in it instead.
    control_plane.kubectl("delete", "dbb", "--all", "-n", name, "--wait=false", check=False)


@pytest.fixture
def kubeconfig(control_plane: ControlPlane) -> Path:
    return control_plane.kubeconfig


@pytest.fixture
async def api_client(control_plane: ControlPlane) -> AsyncIterator[client.ApiClient]:
    api = await kube.api_client(control_plane.kubeconfig)
    async with api:
        yield api


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A real S3-compatible store on loopback for the session, with a bucket `backups` (tests/objectstore.py)."""
    with SeaweedFS.start(tmp_path_factory.mktemp("seaweedfs")) as store:
        yield store
