"""Fixtures for the web console: the incident tests' server (and strongSwan rig), a real headless
Chromium driven by Selenium through Debian's chromedriver, people signed in with role tokens, and
a screenshot of the page saved under test-artifacts/console/ when a test fails."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import WebDriverWait

from tests.incident.conftest import Incident, incident, swan_rig  # noqa: F401  (fixtures re-used here)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def spki_hash(host: str, port: int) -> str:
    """base64 SHA-256 of the server certificate's SubjectPublicKeyInfo: Chromium trusts exactly
    this key (``--ignore-certificate-errors-spki-list``), nothing else."""
    pem = ssl.get_server_certificate((host, port))
    spki = x509.load_pem_x509_certificate(pem.encode()).public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


class Browser:
    """A headless Chromium with the console's base URL."""

    def __init__(self, driver: webdriver.Chrome, base: str) -> None:
        self.driver, self.base = driver, base

    def get(self, path: str) -> None:
        self.driver.get(self.base + path)

    def find(self, css: str) -> Any:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[Any]:
        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def click(self, css: str) -> None:
        """Click and wait for the next page (a form post or a link) to replace this one."""
        old = self.driver.find_element(By.TAG_NAME, "html")
        self.find(css).click()
        self.wait_replaced(old)

    def submit_script(self, script: str, *args: Any) -> None:
        """Run a script that navigates (e.g. submits a hand-made form) and wait for the next page."""
        old = self.driver.find_element(By.TAG_NAME, "html")
        self.driver.execute_script(script, *args)
        self.wait_replaced(old)

    def wait_replaced(self, old: Any) -> None:
        # mid-navigation chromedriver may answer the staleness probe with "unhandled inspector error:
        # Cannot find context with specified id" (a WebDriverException): that is "not yet", poll again
        WebDriverWait(self.driver, 30, ignored_exceptions=(WebDriverException,)).until(staleness_of(old))

    def text(self, css: str) -> str:
        return str(self.find(css).text)

    def sign_in(self, token: str) -> None:
        self.get("/console/login")
        self.find("#token").send_keys(token)
        self.click("#signin")
        assert self.find_all("#whoami"), f"not signed in: {self.driver.current_url}\n{self.page_text()}"

    def page_text(self) -> str:
        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def cookies(self) -> dict[str, str]:
        return {c["name"]: c["value"] for c in self.driver.get_cookies()}


@contextmanager
def chromium(port: int, work: Path, request: pytest.FixtureRequest) -> Iterator[Browser]:
    """A fresh headless Chromium for the console on https://127.0.0.1:<port>; on failure the
    page's screenshot, source and the chromedriver log go to test-artifacts/console/."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            pytest.fail(f"{path} missing: install Debian's chromium and chromium-driver (make setup)")
    work.mkdir(parents=True, exist_ok=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1000", f"--user-data-dir={work / 'chromium'}",
                f"--ignore-certificate-errors-spki-list={spki_hash('127.0.0.1', port)}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver_log = work / "chromedriver.log"
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(driver_log)), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield Browser(driver, f"https://127.0.0.1:{port}")
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is None or rep.failed:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
            try:
                driver.save_screenshot(str(ARTIFACTS / f"{stem}.png"))
                (ARTIFACTS / f"{stem}.html").write_text(driver.page_source)
            except Exception:  # the browser may be gone; the test's own failure matters
                pass
            if driver_log.exists():
                shutil.copy(driver_log, ARTIFACTS / f"{stem}.chromedriver.log")
        driver.quit()


@pytest.fixture
def browser(incident: Incident, tmp_path: Path, request: pytest.FixtureRequest  # noqa: F811
            ) -> Iterator[Browser]:
    with chromium(incident.server.https_port, tmp_path, request) as b:
        yield b


@pytest.fixture
def tokens(incident: Incident) -> dict[str, str]:  # noqa: F811
    """A fresh admin token per role (the token's name is the person's identity)."""
    return {role: incident.token_file(f"console-{role}", role).read_text().strip()
            for role in ("viewer", "revoker", "admin")}


def http_client(incident: Incident) -> httpx.Client:  # noqa: F811
    trust = ssl.create_default_context(cafile=str(incident.dir / "root-ca.pem"))
    return httpx.Client(base_url=incident.url, verify=trust, timeout=30, follow_redirects=False)
