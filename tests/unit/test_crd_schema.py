"""The CRD is structural and teaches the API: every field is described, printer columns come in the agreed order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from common.constants import GROUP, KIND, PLURAL, SHORT_NAME
from hack.harness.controlplane import CRD_FILE


def crd() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(CRD_FILE.read_text())
    return document


def properties(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, child in schema.get("properties", {}).items():
        yield f"{path}.{name}", child
        yield from properties(child, f"{path}.{name}")
    if "items" in schema:
        yield from properties(schema["items"], f"{path}[]")


def test_names_match_the_contract() -> None:
    spec = crd()["spec"]
    assert spec["group"] == GROUP
    assert spec["names"]["kind"] == KIND
    assert spec["names"]["plural"] == PLURAL
    assert spec["names"]["shortNames"] == [SHORT_NAME]
    assert [v["name"] for v in spec["versions"]] == ["v1"]


def test_every_spec_and_status_field_has_a_description() -> None:
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    undescribed = [
        path
        for path, child in properties(schema, "")
        if path.startswith((".spec", ".status")) and not child.get("description")
    ]
    assert undescribed == []


def test_printer_columns_come_in_the_agreed_order() -> None:
    columns = crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    default = [c["name"] for c in columns if not c.get("priority")]
    assert default == ["Database", "Schedule", "Last Backup", "Phase", "Next Backup", "Last Verified", "Age"]
    # -o wide: the last verification's verdict, where each backup went, how many retention kept, how far a
    # point-in-time restore reaches, the window
    wide = ["Verification", "Last File", "Kept", "Recoverable Until", "Window"]
    assert [c["name"] for c in columns if c.get("priority")] == wide
    assert columns[2]["jsonPath"] == ".status.lastBackupTime"


def test_status_is_a_subresource() -> None:
    assert crd()["spec"]["versions"][0]["subresources"] == {"status": {}}
