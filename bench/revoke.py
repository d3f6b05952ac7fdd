"""Revocation latency: ``ikepki revoke --yes`` (and the admin API) until the strongSwan
gateway's IKE_SA is gone, vs the time the same revocation takes to bite through CRL polling
with strongSwan defaults.

Setup: a fresh deployment and ``ikepki serve`` (push worker in-process), a strongSwan gateway
and client, each charon in its own network namespace (tests/incident/swan.py), the gateway
registered as a ``vici`` push target. Each run: the client brings up a childless IKE_SA with
its own certificate, then the certificate is revoked and a watcher polls the gateway's
``list-sas`` every 2 ms until the SA is gone.

    .venv/bin/python bench/revoke.py [--runs 50] [--api-runs 50]

Prints p50/p99 of: CLI command start -> SA deleted (includes the CLI's Python start-up),
revocation commit -> SA deleted, and admin API POST -> SA deleted. Needs root, iproute2,
unshare and /usr/lib/ipsec/charon.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from tests.conftest import init_deployment_dir, run_ikepki, start_server  # noqa: E402
from tests.incident.swan import GW_ID, Charon, Netns, gateway_conf  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def issue(dep: object, profile: str, san: x509.GeneralName, stem: str) -> tuple[bytes, bytes, str]:
    """Through the in-process Authority (the same path ``ikepki issue`` takes)."""
    from ca.csr import parse_csr
    from ca.model import IssuanceRequest, Requester

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name.from_rfc4514_string(f"CN={stem}"))
           .add_extension(x509.SubjectAlternativeName([san]), critical=False).sign(key, hashes.SHA256()))
    issued = dep.authority.issue(IssuanceRequest(  # type: ignore[attr-defined]
        parse_csr(csr.public_bytes(serialization.Encoding.DER)), profile, Requester("bench", "revoke")))
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return issued.certificate.public_bytes(serialization.Encoding.PEM), pem_key, issued.info.serial_hex


def client_conns(local: str, remote: str, n: int) -> str:
    body = "".join(f"""
  vpn{i} {{
    version = 2
    local_addrs = {local}
    remote_addrs = {remote}
    mobike = no
    proposals = aes256gcm16-prfsha256-ecp256
    local {{
      auth = pubkey
      certs = client{i}.pem
      id = client{i}@bench.example.test
    }}
    remote {{
      auth = pubkey
      id = {GW_ID}
      revocation = relaxed
    }}
  }}""" for i in range(n))
    return f"connections {{{body}\n}}\n"


def sa_gone_after(gateway: Charon, identity: str, action: object) -> tuple[float, float, object]:
    """Run ``action``; return (seconds from its start until the SA is gone, wall time gone, result)."""
    gone: list[float] = []

    def watch() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not gateway.established(identity):
                gone.extend((time.monotonic(), time.time()))
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    started = time.monotonic()
    watcher.start()
    result = action()  # type: ignore[operator]
    watcher.join(30)
    if not gone:
        raise RuntimeError(f"SA of {identity} still up 30 s after revocation")
    return gone[0] - started, gone[1], result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50, help="revocations through the CLI")
    ap.add_argument("--api-runs", type=int, default=50, help="revocations through the admin API")
    args = ap.parse_args()
    total = args.runs + args.api_runs
    with tempfile.TemporaryDirectory(prefix="ikepki-bench-revoke-") as tmp:
        work = Path(tmp)
        directory = init_deployment_dir(work / "ikepki")
        server = start_server(directory)
        ns = Netns()
        ns.create()
        gw, cl = Charon("gateway", work / "gw", ns.gw), Charon("client", work / "cl", ns.cl)
        try:
            from ca.deployment import Deployment

            os.environ["SOFTHSM2_CONF"] = str(directory / "softhsm2.conf")
            dep = Deployment.open(directory)
            print(f"issuing {total + 1} certificates …", flush=True)
            gw_leaf, gw_key, _ = issue(dep, "gateway", x509.DNSName(GW_ID), "gw")
            root = (directory / "root-ca.pem").read_bytes()
            chain = (directory / "ca" / "ec.pem").read_bytes()
            clients = [issue(dep, "user", x509.RFC822Name(f"client{i}@bench.example.test"), f"client{i}")
                       for i in range(total)]
            common = {"x509ca/root.pem": root, "x509ca/issuing.pem": chain}
            gw.configure(gateway_conf(ns.gw_addr), {**common, "x509/gw.pem": gw_leaf, "private/gw.pem": gw_key})
            files = dict(common)
            for i, (leaf, key, _) in enumerate(clients):
                files[f"x509/client{i}.pem"] = leaf
                files[f"private/client{i}.pem"] = key
            cl.configure(client_conns(ns.cl_addr, ns.gw_addr, total), files)
            gw.start()
            cl.start()
            run_ikepki("gateways", "add", "--name", "bench-gw", "--kind", "vici", "--url", gw.vici_url,
                       directory=directory)
            token = server.admin_token()
            api = httpx.Client(base_url=f"{server.https_url}/admin/v1", verify=ssl.create_default_context(
                cafile=str(directory / "root-ca.pem")),
                               headers={"authorization": f"Bearer {token}"}, timeout=30)
            cli_total, cli_commit, api_total, api_commit = [], [], [], []
            for i, (_, _, serial) in enumerate(clients):
                ident = f"client{i}@bench.example.test"
                ok, log = cl.initiate(f"vpn{i}")
                if not ok:
                    raise RuntimeError(f"client {i} could not connect: {log}")
                while not gw.established(ident):
                    time.sleep(0.002)
                if i < args.runs:
                    dt, gone_wall, out = sa_gone_after(gw, ident, lambda s=serial: run_ikepki(
                        "revoke", s, "--reason", "keyCompromise", "--yes", "--json", "--wait", "0",
                        directory=directory).stdout)
                    revoked_at = json.loads(str(out))["targets"][0]["revoked_at"]
                    cli_total.append(dt)
                    cli_commit.append(gone_wall - datetime.fromisoformat(revoked_at).timestamp())
                else:
                    dt, gone_wall, out = sa_gone_after(gw, ident, lambda s=serial: api.post(
                        "/revocations", json={"serials": [s], "reason": "keyCompromise"}).json())
                    revoked_at = out["targets"][0]["revoked_at"]  # type: ignore[index]
                    api_total.append(dt)
                    api_commit.append(gone_wall - datetime.fromisoformat(revoked_at).timestamp())
            report(cli_total, cli_commit, api_total, api_commit)
        finally:
            cl.stop()
            gw.stop()
            ns.delete()
            server.stop()
    return 0


def report(cli_total: list[float], cli_commit: list[float], api_total: list[float], api_commit: list[float]) -> None:
    from ocsp.settings import CrlSettings

    crl = CrlSettings()
    rows = [("ikepki revoke --yes (CLI start) -> SA deleted", cli_total),
            ("  of which: revocation commit -> SA deleted", cli_commit),
            ("admin API POST /revocations -> SA deleted", api_total),
            ("  of which: revocation commit -> SA deleted", api_commit)]
    print(f"revocation push to strongSwan over VICI (load avg {os.getloadavg()[0]:.1f}):")
    for name, xs in rows:
        if xs:
            print(f"  {name:<48} n={len(xs):<3} p50 {pct(xs, 0.5) * 1000:7.0f} ms   p99 {pct(xs, 0.99) * 1000:7.0f} ms"
                  f"   max {max(xs) * 1000:7.0f} ms")
    push_p50 = statistics.median(api_total or cli_total)
    full_h, delta_h = crl.full_validity_hours, crl.delta_validity_hours
    print("CRL polling with strongSwan defaults (strongswan.md §7; ikepki CRL defaults):")
    print("  live IKE_SA of the revoked certificate: never terminated (established SAs are not re-checked;"
          " reauth_time = 0 by default)")
    print(f"  new IKE_AUTH refused only once the gateway's cached CRL expires: up to {delta_h:g} h (delta CRL"
          f" nextUpdate) / {full_h:g} h (full CRL nextUpdate)")
    print(f"  ratio: CRL polling (delta, worst case) / push p50 = {delta_h * 3600 / push_p50:,.0f}x;"
          f" full CRL: {full_h * 3600 / push_p50:,.0f}x; live SA: unbounded")


if __name__ == "__main__":
    raise SystemExit(main())
