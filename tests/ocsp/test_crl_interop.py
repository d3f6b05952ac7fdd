"""CRLs served by `ikepki serve` checked by openssl (`openssl crl -verify`, `openssl verify
-crl_check`, `-crl_check_all` with the root CRL, `-use_deltas` with a full + delta pair)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca.model import RevocationReason
from tests.conftest import run_ikepki
from tests.ocsp.ocsp_helpers import Pki, fetch_crl, openssl, wait_for

pytestmark = pytest.mark.interop


def crl_file(pki: Pki, name: str, dest: Path) -> Path:
    """Fetch /crl/<name> (waiting for the first publication) and write it as PEM."""
    crl = wait_for(lambda: fetch_crl(pki.url, name), what=f"/crl/{name}")
    dest.write_bytes(crl.public_bytes(Encoding.PEM))
    return dest


def listed(pki: Pki, name: str, serial: int) -> x509.CertificateRevocationList | None:
    crl = fetch_crl(pki.url, name)
    return crl if crl is not None and crl.get_revoked_certificate_by_serial_number(serial) is not None else None


def test_full_delta_and_root_crls_verify(pki: Pki, tmp_path: Path) -> None:
    for name, chain in (("ec.crl", pki.chain()), ("ec-delta.crl", pki.chain()), ("rsa.crl", pki.chain("rsa")),
                        ("attestation.crl", pki.chain("attestation")), ("root.crl", pki.root_pem())):
        path = crl_file(pki, name, tmp_path / f"{name}.pem")
        out = openssl("crl", "-in", path, "-CAfile", chain, "-noout")
        assert "verify OK" in out.stderr + out.stdout, (name, out.stderr)
    full = wait_for(lambda: fetch_crl(pki.url, "ec.crl"))
    delta = wait_for(lambda: fetch_crl(pki.url, "ec-delta.crl"))
    aki = full.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == pki.dep.issuers["ec"].key_id
    assert full.extensions.get_extension_for_class(x509.FreshestCRL).value[0].full_name[0].value.endswith(
        "/crl/ec-delta.crl")
    indicator = delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    assert indicator.critical and indicator.value.crl_number <= full.extensions.get_extension_for_class(
        x509.CRLNumber).value.crl_number
    assert full.next_update_utc is not None and full.next_update_utc > full.last_update_utc
    # PEM on request, same CRL
    der = httpx.get(f"{pki.url}/crl/root.crl", timeout=10).content
    for suffix in ("root.pem", "root.crl?format=pem"):
        r = httpx.get(f"{pki.url}/crl/{suffix}", timeout=10)
        assert r.status_code == 200 and r.content.startswith(b"-----BEGIN X509 CRL-----")
        assert x509.load_pem_x509_crl(r.content).public_bytes(Encoding.DER) == der
    assert httpx.get(f"{pki.url}/crl/nope.crl", timeout=10).status_code == 404
    assert httpx.get(f"{pki.url}/crl/root-delta.crl", timeout=10).status_code == 404


def test_verify_crl_check_and_crl_check_all(pki: Pki, tmp_path: Path) -> None:
    good_cert, good = pki.issue()
    bad_cert, bad = pki.issue()
    pki.revoke(bad_cert, RevocationReason.keyCompromise)
    crl = wait_for(lambda: listed(pki, "ec.crl", bad_cert.serial_number), what="revoked serial in the full CRL")
    entry = crl.get_revoked_certificate_by_serial_number(bad_cert.serial_number)
    assert entry is not None and entry.extensions.get_extension_for_class(x509.CRLReason).value.reason \
        is x509.ReasonFlags.key_compromise
    assert crl.get_revoked_certificate_by_serial_number(good_cert.serial_number) is None
    # the CRL just seen listing the serial, not a second fetch: with several workers each polls the
    # publications on its own, so for up to poll_seconds another worker may still serve the previous CRL
    full = tmp_path / "ec.crl.pem"
    full.write_bytes(crl.public_bytes(Encoding.PEM))
    root_crl = crl_file(pki, "root.crl", tmp_path / "root.crl.pem")
    chain = pki.chain()
    ok = openssl("verify", "-crl_check", "-CAfile", chain, "-CRLfile", full, good)
    assert f"{good}: OK" in ok.stdout
    fail = openssl("verify", "-crl_check", "-CAfile", chain, "-CRLfile", full, bad, check=False)
    assert fail.returncode != 0 and "certificate revoked" in fail.stdout + fail.stderr
    ok_all = openssl("verify", "-crl_check_all", "-CAfile", chain, "-CRLfile", full, "-CRLfile", root_crl, good)
    assert f"{good}: OK" in ok_all.stdout
    fail_all = openssl("verify", "-crl_check_all", "-CAfile", chain, "-CRLfile", full, "-CRLfile", root_crl, bad,
                       check=False)
    assert fail_all.returncode != 0 and "certificate revoked" in fail_all.stdout + fail_all.stderr
    # without the root CRL, -crl_check_all cannot check the issuing CA
    no_root = openssl("verify", "-crl_check_all", "-CAfile", chain, "-CRLfile", full, good, check=False)
    assert no_root.returncode != 0 and "unable to get certificate CRL" in no_root.stdout + no_root.stderr


def test_delta_crl_on_top_of_an_older_full_crl(pki: Pki, tmp_path: Path) -> None:
    """A relying party holding the full CRL from before a revocation learns it from the delta alone."""
    cert, path = pki.issue()
    old_full = crl_file(pki, "ec.crl", tmp_path / "old-full.pem")
    pki.revoke(cert, RevocationReason.affiliationChanged)
    delta = wait_for(lambda: listed(pki, "ec-delta.crl", cert.serial_number), what="serial in the delta CRL")
    delta_path = tmp_path / "delta.pem"
    delta_path.write_bytes(delta.public_bytes(Encoding.PEM))
    chain = pki.chain()
    before = openssl("verify", "-crl_check", "-CAfile", chain, "-CRLfile", old_full, path)
    assert f"{path}: OK" in before.stdout  # the old full CRL alone does not know
    out = openssl("verify", "-crl_check", "-use_deltas", "-CAfile", chain, "-CRLfile", old_full, "-CRLfile",
                  delta_path, path, check=False)
    assert out.returncode != 0 and "certificate revoked" in out.stdout + out.stderr
    assert openssl("crl", "-in", delta_path, "-CAfile", chain, "-noout").returncode == 0


def test_delta_lists_released_hold_as_remove_from_crl(pki: Pki) -> None:
    cert, _ = pki.issue()
    pki.revoke(cert, RevocationReason.certificateHold)
    wait_for(lambda: listed(pki, "ec-delta.crl", cert.serial_number), what="hold in the delta CRL")
    pki.release(cert)

    def removed() -> bool:
        crl = listed(pki, "ec-delta.crl", cert.serial_number)
        if crl is None:
            return False
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        assert entry is not None
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.remove_from_crl

    wait_for(removed, what="removeFromCRL entry")
    wait_for(lambda: fetch_crl(pki.url, "ec.crl").get_revoked_certificate_by_serial_number(  # type: ignore[union-attr]
        cert.serial_number) is None, what="released hold gone from the full CRL")


def test_crl_publish_and_list_cli(pki: Pki, deployment_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "static"
    proc = run_ikepki("crl", "publish", "--out", str(out), "--json", directory=deployment_dir)
    written = json.loads(proc.stdout)["written"]
    names = {Path(w["file"]).name for w in written}
    assert {"ec.crl", "ec-delta.crl", "rsa.crl", "attestation.crl", "root.crl"} <= names
    for issuer, chain in (("ec", pki.chain()), ("root", pki.root_pem())):
        der = out / f"{issuer}.crl"
        assert openssl("crl", "-inform", "DER", "-in", der, "-CAfile", chain, "-noout").returncode == 0
        assert (out / f"{issuer}.pem").read_bytes().startswith(b"-----BEGIN X509 CRL-----")
    rows = json.loads(run_ikepki("crl", "list", "--json", directory=deployment_dir).stdout)
    kinds = {(r["issuer"], r["kind"]) for r in rows}
    assert {("ec", "full"), ("ec", "delta"), ("root", "full")} <= kinds
    delta = next(r for r in rows if r["issuer"] == "ec" and r["kind"] == "delta")
    assert delta["base"] is not None and delta["number"] > delta["base"]


def test_invalidity_date_and_reason_codes_in_the_full_crl(pki: Pki) -> None:
    from datetime import UTC, datetime, timedelta

    from ca.model import RevocationRequest
    from tests.ocsp.ocsp_helpers import TESTER

    cert, _ = pki.issue()
    # bounded since issue 21: not before the certificate's notBefore, not in the future
    compromised_at = min(cert.not_valid_before_utc + timedelta(seconds=30), datetime.now(UTC)).replace(microsecond=0)
    pki.dep.authority.revoke(RevocationRequest((cert.serial_number,), RevocationReason.privilegeWithdrawn, TESTER,
                                               invalidity_date=compromised_at))
    crl = wait_for(lambda: listed(pki, "ec.crl", cert.serial_number), what="entry in the full CRL")
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.InvalidityDate).value.invalidity_date_utc == compromised_at
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is \
        x509.ReasonFlags.privilege_withdrawn
