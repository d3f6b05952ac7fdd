"""Container tests: the image is built once per session by `make image` (content-cached, so a
repeat run costs seconds) and run with podman."""

from __future__ import annotations

import pytest

from tests.container.podman import build_image


@pytest.fixture(scope="session")
def image() -> str:
    return build_image()
