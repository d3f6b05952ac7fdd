"""Fixtures for the OCSP/CRL tests."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ocsp.ocsp_helpers import Pki


@pytest.fixture(scope="module")
def pki(deployment: Any, session_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The session deployment (in-process, for issuing and revoking) and ``ikepki serve`` over it."""
    return Pki(deployment, session_server.http_url, tmp_path_factory.mktemp("ocsp-files"))
