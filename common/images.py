"""Which image may run beside a restore test: `spec.verify.image`.

A restore test starts a scratch database server in the backup or check Job's Pod, from the database StatefulSet's own
image by default. That server shares the Pod's network, receives the decrypted backup, and its answers decide whether
the Verified condition is true. So its image is a choice the DatabaseBackup's author may not make freely: it is one
of the database StatefulSet's own images (its containers and init containers), or one the cluster administrators
approved for the namespace in its annotation `databases.test.io/verify-images` (a comma- or space-separated list of
exact image references). Annotations on a Namespace are changed with `update` on namespaces, which namespace users do
not have.

Pure; the webhook judges at apply time, the reconciler again before every Job (the StatefulSet's image changes with
its upgrades).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["VERIFY_IMAGES", "approved_images", "image_refusal", "statefulset_images"]

VERIFY_IMAGES: Final = "databases.test.io/verify-images"
FIELD: Final = "spec.verify.image"


def statefulset_images(statefulset: Mapping[str, Any] | None) -> frozenset[str]:
    template = (((statefulset or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = [*(template.get("containers") or []), *(template.get("initContainers") or [])]
    return frozenset(str(c["image"]) for c in containers if isinstance(c, Mapping) and c.get("image"))


def approved_images(annotations: Mapping[str, str]) -> frozenset[str]:
    listed = annotations.get(VERIFY_IMAGES) or ""
    return frozenset(image for image in listed.replace(",", " ").split() if image)


def image_refusal(
    image: str, statefulset: Mapping[str, Any] | None, namespace_annotations: Mapping[str, str]
) -> str | None:
    """Why `image` may not run as the scratch server, or None if it may."""
    if image in statefulset_images(statefulset) or image in approved_images(namespace_annotations):
        return None
    return (
        f'"{image}" is neither an image of the database StatefulSet nor one the cluster administrators approved in '
        f"the namespace's annotation {VERIFY_IMAGES}: the scratch server receives the decrypted backup"
    )
