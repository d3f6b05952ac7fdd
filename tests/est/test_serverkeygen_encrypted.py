"""RFC 7030 §4.4.2: serverkeygen with the key encrypted to a key the client names
(AsymmetricDecryptKeyIdentifier). OpenSSL (`openssl cms -decrypt`, `-verify`) opens the answer."""

from __future__ import annotations

import base64
import subprocess
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID, ObjectIdentifier

from enrollment.est.keyprotect import OID_ASYMM_DECRYPT_KEY_ID, OID_DECRYPT_KEY_ID, subject_key_id
from enrollment.est.wire import certs_from_certs_only
from tests.est.conftest import EstEnv
from tests.est.est_helpers import enroll, write_pem

pytestmark = pytest.mark.interop


def csr_with_key_id(key: object, device: str, key_id: bytes, oid: str = OID_ASYMM_DECRYPT_KEY_ID) -> bytes:
    builder = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device)]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"{device}.example.test")]), False)
               .add_attribute(ObjectIdentifier(oid), key_id, _tag=_ASN1Type.OctetString))
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)  # type: ignore[arg-type]


def parts(response_body: bytes, content_type: str) -> dict[str, bytes]:
    msg = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + response_body)
    out = {}
    for part in msg.iter_parts():
        out[part.get_content_type() + (f"; smime-type={part.get_param('smime-type')}"
                                       if part.get_param("smime-type") else "")] = base64.b64decode(
            part.get_payload(decode=False))
    return out


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_encrypted_server_generated_key_opens_with_openssl(est: EstEnv, tmp_path: Path, kind: str) -> None:
    device = f"skg-enc-{kind}"
    secret = est.register_one(device, [f"DNS:{device}.example.test"])
    transport = ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(65537, 2048)
    write_pem(tmp_path / "transport.key", transport)  # type: ignore[arg-type]
    csr = csr_with_key_id(transport, device, subject_key_id(transport.public_key()))
    with est.client() as c:
        r = enroll(c, est.url, csr, op="serverkeygen", auth=(device, secret))
    assert r.status_code == 200, r.text
    got = parts(r.content, r.headers["content-type"])
    key_part = got["application/pkcs7-mime; smime-type=server-generated-key"]
    (cert,) = certs_from_certs_only(got["application/pkcs7-mime; smime-type=certs-only"])
    (tmp_path / "env.der").write_bytes(key_part)
    script = f"""
openssl cms -decrypt -inform DER -in env.der -inkey transport.key -out signed.der
openssl cms -verify -inform DER -in signed.der -CAfile {est.root} -purpose any -out package.der
"""
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    package = (tmp_path / "package.der").read_bytes()
    assert package[0] == 0x30  # AsymmetricKeyPackage: SEQUENCE OF OneAsymmetricKey
    private = serialization.load_der_private_key(package[2 if package[1] < 0x80 else 2 + (package[1] & 0x7F):], None)
    assert private.public_key() == cert.public_key()
    assert est.store.registration(device)[0] == 1  # type: ignore[index]


def test_unknown_or_symmetric_key_id_is_refused_before_issuing(est: EstEnv) -> None:
    device = "skg-enc-bad"
    secret = est.register_one(device, [f"DNS:{device}.example.test"])
    key = ec.generate_private_key(ec.SECP256R1())
    before = est.store.cert_count()
    with est.client() as c:
        r = enroll(c, est.url, csr_with_key_id(key, device, b"\x01" * 20), op="serverkeygen", auth=(device, secret))
        assert r.status_code == 400 and "AsymmetricDecryptKeyIdentifier" in r.text
        r = enroll(c, est.url, csr_with_key_id(key, device, b"\x01" * 20, OID_DECRYPT_KEY_ID), op="serverkeygen",
                   auth=(device, secret))
        assert r.status_code == 400 and "symmetric" in r.text
    assert est.store.cert_count() == before
    assert est.store.registration(device) == (0, None)
