"""A deployment configured with the test identity provider, its server, and the provider."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, free_port, init_deployment_dir, run_ikepki, start_server
from tests.oidc.oidc_idp import Idp

CONFIG = """
oidc:
  providers:
    corp:
      issuer: {issuer}
      client_ids: [ikepki-vpn]
      group_roles: {{vpn-staff: staff, vpn-contractors: contractors}}
      logout_action: hold
    retired:
      issuer: {issuer}
      client_ids: [ikepki-vpn]
      enabled: false
"""


@dataclass
class OidcRig:
    dir: Path
    server: Server
    idp: Idp

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.dir / "root-ca.pem"))

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.https_url, verify=self.tls(), timeout=30)

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.server.https_url}/admin/v1", verify=self.tls(),
                            timeout=30, headers={"authorization": f"Bearer {self.server.admin_token()}"})

    def ikepki(self, *args: str, check: bool = True):  # type: ignore[no-untyped-def]
        return run_ikepki(*args, directory=self.dir, check=check)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcRig]:
    port = free_port()
    directory = init_deployment_dir(tmp_path_factory.mktemp("oidc") / "ikepki",
                                    CONFIG.format(issuer=f"http://127.0.0.1:{port}"))
    server = start_server(directory)
    try:
        idp = Idp(f"{server.https_url}/user/v1/backchannel-logout/corp", port, directory / "root-ca.pem")
    except BaseException:
        server.stop()
        raise
    yield OidcRig(directory, server, idp)
    idp.stop()
    server.stop()
