"""curl + openssl exactly as an MDM shell script would drive EST (independent clients)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_binary
from tests.est.conftest import EstEnv

pytestmark = pytest.mark.interop


def sh(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


def test_mdm_script_enroll_and_reenroll(est: EstEnv, tmp_path: Path) -> None:
    require_binary("curl")
    require_binary("openssl")
    secret = est.register_one("curl-dev-1", ["DNS:curl-dev-1.example.test"])
    script = f"""
URL={est.url}/.well-known/est
CA={est.root}
openssl ecparam -name prime256v1 -genkey -noout -out dev.key
openssl req -new -key dev.key -subj "/O=Example/CN=curl-dev-1" \\
    -addext "subjectAltName=DNS:curl-dev-1.example.test" -outform DER | openssl base64 > csr.b64
curl -sS --fail-with-body --cacert "$CA" -o cacerts.b64 "$URL/cacerts"
openssl base64 -d -A -in cacerts.b64 | openssl pkcs7 -inform DER -print_certs -out cacerts.pem
curl -sS --fail-with-body --cacert "$CA" -u "curl-dev-1:{secret}" -H "Content-Type: application/pkcs10" \\
    --data-binary @csr.b64 -o cert.b64 -D headers.txt "$URL/simpleenroll"
openssl base64 -d -A -in cert.b64 | openssl pkcs7 -inform DER -print_certs -out dev.pem
openssl verify -CAfile "$CA" -untrusted cacerts.pem dev.pem
# re-enroll: new key, same identity, authenticated by the current certificate
openssl ecparam -name prime256v1 -genkey -noout -out dev2.key
openssl req -new -key dev2.key -subj "/O=Example/CN=curl-dev-1" \\
    -addext "subjectAltName=DNS:curl-dev-1.example.test" -outform DER | openssl base64 -A > csr2.b64
curl -sS --fail-with-body --cacert "$CA" --cert dev.pem --key dev.key -H "Content-Type: application/pkcs10" \\
    --data-binary @csr2.b64 -o cert2.b64 "$URL/simplereenroll"
openssl base64 -d -A -in cert2.b64 | openssl pkcs7 -inform DER -print_certs -out dev2.pem
openssl x509 -in dev2.pem -noout -subject -ext subjectAltName
"""
    r = sh(script, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "subject=O = Example, CN = curl-dev-1" in r.stdout
    assert "DNS:curl-dev-1.example.test" in r.stdout
    headers = (tmp_path / "headers.txt").read_text().lower()
    assert "content-type: application/pkcs7-mime; smime-type=certs-only" in headers
    assert "content-length:" in headers and "transfer-encoding: chunked" not in headers
    assert (tmp_path / "cert.b64").read_text().count("\n") == 0  # single-line base64 (RFC 8951)
    assert (tmp_path / "csr.b64").read_text().count("\n") > 1  # the request was line-wrapped base64
    assert est.store.registration("curl-dev-1")[0] == 1  # type: ignore[index]


def test_csrattrs_and_serverkeygen_with_openssl(est: EstEnv, tmp_path: Path) -> None:
    secret = est.register_one("curl-skg-1", ["DNS:curl-skg-1.example.test"])
    script = f"""
URL={est.url}/.well-known/est
curl -sS --fail-with-body --cacert {est.root} "$URL/csrattrs" | openssl base64 -d -A > attrs.der
openssl asn1parse -inform DER -in attrs.der
openssl ecparam -name prime256v1 -genkey -noout -out throwaway.key
openssl req -new -key throwaway.key -subj "/O=Example/CN=curl-skg-1" \\
    -addext "subjectAltName=DNS:curl-skg-1.example.test" -outform DER | openssl base64 -A > csr.b64
curl -sS --fail-with-body --cacert {est.root} -u "curl-skg-1:{secret}" -H "Content-Type: application/pkcs10" \\
    --data-binary @csr.b64 -o multipart.txt -D headers.txt "$URL/serverkeygen"
"""
    r = sh(script, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ecdsa-with-SHA256" in r.stdout and "prime256v1" in r.stdout and "Subject Alternative Name" in r.stdout
    ctype = next(ln for ln in (tmp_path / "headers.txt").read_text().splitlines()
                 if ln.lower().startswith("content-type:"))
    boundary = ctype.split("boundary=")[1].strip()
    raw = (tmp_path / "multipart.txt").read_bytes().decode()
    parts = [p for p in raw.split(f"--{boundary}") if p.strip() not in ("", "--")]
    bodies = {}
    for part in parts:
        head, _, body = part.strip().partition("\r\n\r\n")
        bodies[head.splitlines()[0].split(":", 1)[1].strip()] = body.strip()
    (tmp_path / "key.b64").write_text(bodies["application/pkcs8"])
    (tmp_path / "cert.b64").write_text(bodies["application/pkcs7-mime; smime-type=certs-only"])
    r = sh("""
openssl base64 -d -A -in key.b64 | openssl pkey -inform DER -out key.pem
openssl base64 -d -A -in cert.b64 | openssl pkcs7 -inform DER -print_certs -out cert.pem
test "$(openssl pkey -in key.pem -pubout)" = "$(openssl x509 -in cert.pem -noout -pubkey)"
openssl x509 -in cert.pem -noout -subject
""", tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "CN = curl-skg-1" in r.stdout
