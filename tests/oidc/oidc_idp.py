"""The test identity provider: npm ``oidc-provider`` (tests/oidc/idp, installed by ``make setup``)
started on a free loopback port, and a person's sign-in through its HTML forms over HTTP."""

from __future__ import annotations

import html.parser
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from tests.conftest import free_port

IDP_DIR = Path(__file__).parent / "idp"


class _Forms(html.parser.HTMLParser):
    """Every <form>: action, method and the inputs' names/values (buttons with a name included)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": a.get("method", "get").lower(), "fields": {},
                               "buttons": []})
        elif tag == "input" and self.forms and a.get("name") and a.get("type") != "submit":
            self.forms[-1]["fields"][a["name"]] = a.get("value", "")
        elif tag in ("button", "input") and self.forms and a.get("name"):
            self.forms[-1]["buttons"].append((a["name"], a.get("value", "")))


def forms(page: str) -> list[dict[str, Any]]:
    p = _Forms()
    p.feed(page)
    return p.forms


@dataclass
class Browser:
    """A person at a browser: cookies kept, forms submitted as shown."""

    http: httpx.Client = field(default_factory=lambda: httpx.Client(follow_redirects=True, timeout=15))

    def submit(self, page: httpx.Response, button: str | None = None, **values: str) -> httpx.Response:
        """Submit the page's first form as if its first (or the named) button were clicked."""
        found = forms(page.text)
        assert found, f"no form on {page.url}:\n{page.text[:2000]}"
        form = found[0]
        clicked = [b for b in form["buttons"] if button is None or b[0] == button][:1]
        data = {**form["fields"], **dict(clicked), **values}
        return self.http.post(urljoin(str(page.url), form["action"]), data=data)

    def sign_in(self, verification_uri_complete: str, login: str, password: str = "secret",
                consent: bool = True) -> httpx.Response:
        """Device verification page -> login form -> consent -> the provider's success page."""
        page = self.http.get(verification_uri_complete)
        page = self.submit(page)  # "Continue" (xsrf + user_code)
        for _ in range(5):
            found = forms(page.text)
            names = {n for f in found for n in f["fields"]} | {b[0] for f in found for b in f["buttons"]}
            if "login" in names:
                page = self.submit(page, login=login, password=password)
            elif "confirm" in names:  # the device confirmation: Continue / Abort
                page = self.submit(page, "confirm" if consent else "abort")
            elif "prompt" in names:  # consent
                page = self.submit(page)
            else:
                break
        return page

    def log_out(self, issuer: str) -> httpx.Response:
        """RP-less logout at the provider's end_session endpoint (its confirmation form, logout=yes)."""
        page = self.http.get(f"{issuer}/session/end")
        return self.submit(page, logout="yes")


class Idp:
    def __init__(self, logout_uri: str, port: int | None = None, ca_file: Path | None = None,
                 id_token_alg: str = "RS256", console: tuple[str, str] | None = None) -> None:
        """``console``: (redirect URI, client secret) of the web console's client ``ikepki-console``."""
        node = shutil.which("node")
        if not node or not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
            raise AssertionError("node and tests/oidc/idp/node_modules are required: run `make setup` "
                                 "(npm ci in tests/oidc/idp)")
        self.port = port or free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.output: list[str] = []
        self.proc = subprocess.Popen([node, "idp.mjs", str(self.port), logout_uri], cwd=IDP_DIR,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={"PATH": "/usr/bin:/bin", "IDP_ID_TOKEN_ALG": id_token_alg,
                                          **({"NODE_EXTRA_CA_CERTS": str(ca_file)} if ca_file else {}),
                                          **({"IDP_CONSOLE_REDIRECT": console[0], "IDP_CONSOLE_SECRET": console[1]}
                                             if console else {})})
        deadline = time.monotonic() + 30
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("READY"):
                threading.Thread(target=self._drain, daemon=True).start()
                return
            if not line and self.proc.poll() is not None:
                break
        self.stop()
        raise AssertionError("oidc-provider did not start")

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def device_code(self, scope: str = "openid email groups") -> dict[str, Any]:
        resp = httpx.post(f"{self.issuer}/device/auth", data={"client_id": "ikepki-vpn", "scope": scope})
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def token(self, device_code: str) -> dict[str, Any]:
        resp = httpx.post(f"{self.issuer}/token", data={"grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                                                        "device_code": device_code, "client_id": "ikepki-vpn"})
        return dict(resp.json())

    def id_token(self, login: str) -> str:
        """A fresh ID token for ``login`` obtained the way the CLI does (device grant + forms)."""
        code = self.device_code()
        Browser().sign_in(code["verification_uri_complete"], login)
        tokens = self.token(code["device_code"])
        assert "id_token" in tokens, tokens
        return str(tokens["id_token"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
