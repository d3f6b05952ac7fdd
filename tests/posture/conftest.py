"""Posture tests: swtpm instances (the attestation tests' recipe) with measured boots."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "device"))

from device_helpers import running_swtpm


@pytest.fixture()
def swtpm() -> Iterator[Any]:
    with running_swtpm() as tpm:
        yield tpm
