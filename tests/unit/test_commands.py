"""Every console script of the contract is installed and answers --help."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("command", "mentions"),
    [
        ("dbb-webhook", "--cert-dir"),
        ("dbb-reconciler", "--runner-image"),
        ("dbb-backup", "restore"),
        ("dbb-certs", "--service"),
    ],
)
def test_the_command_is_installed_and_prints_help(command: str, mentions: str) -> None:
    path = shutil.which(command, path=str(BIN))
    assert path is not None, f"{command} is not installed in {BIN}"
    result = subprocess.run([path, "--help"], capture_output=True, text=True, check=False, timeout=30)
    assert result.returncode == 0
    assert mentions in result.stdout
