"""``ikepki serve --workers 3``: three spawned processes accept on the same two ports over one store
and one SoftHSM token. Enrollments over ACME, EST and SCEP run concurrently against them, one-time
secrets and nonces are redeemed once, every worker answers alike, background tasks run in exactly
one process, a killed worker is replaced, /metrics counts the whole service, SIGTERM stops all."""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import sqlite3
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from acme import challenges, client, messages
from acme_helpers import AcmeServer, Eab, Http01Responder, RawClient, acme_env, jws, problem_type
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from est_helpers import enroll as est_enroll
from est_helpers import issued_cert
from est_helpers import make_csr as est_csr
from est_helpers import new_key as est_key

from tests.conftest import Server, free_port, init_deployment_dir, start_server
from tests.scep.pyclient import Requester, ScepHttp, make_csr, read_certrep

WORKERS = 3
SUCCESS, FAILURE = "0", "2"
TASKS = {"crl-publisher", "ocsp-presign", "ocsp-signer-rotation"}


@dataclass
class Svc:
    server: Server
    http01_port: int

    def verify(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.server.root_pem))

    def https(self) -> httpx.Client:
        return httpx.Client(verify=self.verify(), timeout=60)

    def admin(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.server.admin_token()}"}

    def cert_count(self) -> int:
        with sqlite3.connect(self.server.dir / "ikepki.db") as conn:
            return int(conn.execute("select count(*) from certificates").fetchone()[0])

    def serials(self) -> list[str]:
        with sqlite3.connect(self.server.dir / "ikepki.db") as conn:
            return [r[0] for r in conn.execute("select serial from certificates")]


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Svc]:
    directory = init_deployment_dir(tmp_path_factory.mktemp("workers") / "ikepki")
    http01 = free_port()
    server = start_server(directory, env=acme_env(http01, free_port()), extra_args=("--workers", str(WORKERS)))
    yield Svc(server, http01)
    server.stop()


# -- which worker holds which connection (from /proc, no cooperation from the server) ---------------

def worker_pids(server: Server) -> set[int]:
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == server.process.pid and b"spawn_main" in cmdline:
            out.add(int(entry.name))
    return out


def _socket_inode(server_port: int, client_port: int) -> str | None:
    want_local, want_remote = f":{server_port:04X}", f":{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(want_local) and fields[2].endswith(want_remote):
            return fields[9]
    return None


def owner(pids: set[int], server_port: int, client_port: int) -> int | None:
    inode = _socket_inode(server_port, client_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        with_fds = Path(f"/proc/{pid}/fd")
        try:
            for fd in with_fds.iterdir():
                try:
                    if os.readlink(fd) == target:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


def http_get(sock: socket.socket, path: str) -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return head.split(b"\r\n", 1)[0] + b"\n" + body


def http_post_ocsp(sock: socket.socket, der: bytes) -> bytes:
    sock.sendall(b"POST /ocsp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/ocsp-request\r\n"
                 b"content-length: %d\r\n\r\n%s" % (len(der), der))
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    etag = re.search(rb"etag: (\S+)", head, re.I)
    return (etag.group(1) if etag else b"") + b"\n" + body


def presigned_request(svc: Svc) -> bytes:
    """A nonce-less OCSP request (pre-signed path) for a serial under the ec issuing CA."""
    issuer = x509.load_pem_x509_certificate((svc.server.dir / "ca" / "ec.pem").read_bytes())
    name_hash = hashes.Hash(hashes.SHA1())
    name_hash.update(issuer.subject.public_bytes())
    key_hash = hashes.Hash(hashes.SHA1())
    key_hash.update(issuer.public_key().public_bytes(serialization.Encoding.X962,
                                                      serialization.PublicFormat.UncompressedPoint))
    req = ocsp.OCSPRequestBuilder().add_certificate_by_hash(name_hash.finalize(), key_hash.finalize(), 0x5EED,
                                                             hashes.SHA1()).build()
    return req.public_bytes(serialization.Encoding.DER)


def metrics(svc: Svc) -> str:
    return httpx.get(f"{svc.server.http_url}/metrics", timeout=10).text


def task_processes(text: str) -> dict[str, int]:
    pattern = r'ikepki_background_task_processes\{task="([^"]+)"\} (\d+)'
    return {m.group(1): int(m.group(2)) for m in re.finditer(pattern, text)}


# -- tests -------------------------------------------------------------------------------------------

def test_every_worker_accepts_and_answers_alike(svc: Svc) -> None:
    pids = worker_pids(svc.server)
    assert len(pids) == WORKERS
    answers: dict[int, set[bytes]] = {}
    deadline = time.monotonic() + 60
    ocsp_der = presigned_request(svc)
    while set(answers) != pids and time.monotonic() < deadline:
        with socket.create_connection(("127.0.0.1", svc.server.http_port), timeout=10) as sock:
            body = http_get(sock, "/ca/root.pem") + http_get(sock, "/scep?operation=GetCACaps") \
                + http_post_ocsp(sock, ocsp_der)  # pre-signed: the same bytes and ETag from every worker
            pid = owner(pids, svc.server.http_port, sock.getsockname()[1])
            if pid is not None:
                answers.setdefault(pid, set()).add(body)
    assert set(answers) == pids, "every worker accepts connections on the shared port"
    assert len(set().union(*answers.values())) == 1, "every worker gives the same answer"
    assert next(iter(answers.values())).pop().startswith(b"HTTP/1.1 200")


def _eab(svc: Svc) -> Eab:
    from ca.store.db import Database
    from enrollment.acme.store import AcmeStore

    kid, mac = f"eab-workers-{os.urandom(6).hex()}", os.urandom(32)
    db = Database(f"sqlite:///{svc.server.dir / 'ikepki.db'}")
    try:
        AcmeStore(db).add_eab_key(kid, mac, "machine", ["*.test"], None, False, datetime.now(UTC))
    finally:
        db.dispose()
    return Eab(kid, base64.urlsafe_b64encode(mac).decode().rstrip("="))


def _acme_order(svc: Svc, responder: Http01Responder, i: int) -> x509.Certificate:
    import josepy as jose

    key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    eab = _eab(svc)
    net = client.ClientNetwork(key, alg=jose.ES256, verify_ssl=str(svc.server.root_pem), user_agent="ikepki-tests")
    try:
        cl = client.ClientV2(client.ClientV2.get_directory(f"{svc.server.https_url}/acme/directory", net), net)
        binding = messages.ExternalAccountBinding.from_data(account_public_key=key.public_key(), kid=eab.kid,
                                                            hmac_key=eab.hmac_key, directory=cl.directory)
        net.account = cl.new_account(messages.NewRegistration.from_data(
            email="w@example.test", terms_of_service_agreed=True, external_account_binding=binding))
        name = f"acme-{i}.workers.test"
        cert_key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
               .sign(cert_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        order = cl.new_order(csr)
        for authz in order.authorizations:
            challb = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01))
            response, validation = challb.response_and_validation(net.key)
            responder.tokens[challb.chall.encode("token")] = validation
            cl.answer_challenge(challb, response)
        done = cl.poll_and_finalize(order, datetime.now() + timedelta(seconds=120))
        return x509.load_pem_x509_certificates(done.fullchain_pem.encode())[0]
    finally:
        net.session.close()


def _scep_otp(svc: Svc) -> str:
    with svc.https() as c:
        r = c.post(f"{svc.server.https_url}/admin/v1/scep/challenges", json={"profile": "machine"}, headers=svc.admin())
    assert r.status_code == 201, r.text
    return str(r.json()["challenge"])


def _scep_enroll(svc: Svc, ra: x509.Certificate, password: str, cn: str) -> tuple[str, x509.Certificate | None]:
    req = Requester.new()
    with httpx.Client(timeout=60) as http:
        r = ScepHttp(f"{svc.server.http_url}/scep", http).post(req.message("19", make_csr(req.key, cn, password, (cn,)),
                                                                           ra))
    assert r.status_code == 200, r.text
    rep = read_certrep(r.content, req)
    return rep.status, (rep.certificates[0] if rep.certificates else None)


def _est_secrets(svc: Svc, devices: list[str]) -> dict[str, str]:
    with svc.https() as c:
        r = c.post(f"{svc.server.https_url}/admin/v1/est/registrations", headers=svc.admin(), json={
            "devices": [{"device_id": d, "profile": "machine", "sans": [f"DNS:{d}.workers.test"]} for d in devices]})
    assert r.status_code in (200, 201), r.text
    return {d["device_id"]: d["secret"] for d in r.json()["registrations"]}


def _est_enroll(svc: Svc, device: str, secret: str) -> httpx.Response:
    with svc.https() as c:
        return est_enroll(c, svc.server.https_url, est_csr(est_key(), device, [f"DNS:{device}.workers.test"]),
                          auth=(device, secret))


def test_concurrent_enrollments_over_acme_est_and_scep(svc: Svc) -> None:
    before = svc.cert_count()
    devices = [f"wdev-{i}" for i in range(8)]
    est_secrets = _est_secrets(svc, devices)
    otps = [_scep_otp(svc) for _ in range(4)]
    ra = ScepHttp(f"{svc.server.http_url}/scep").ra()
    with Http01Responder(svc.http01_port) as responder, ThreadPoolExecutor(12) as pool:
        acme_f = [pool.submit(_acme_order, svc, responder, i) for i in range(4)]
        est_f = [pool.submit(_est_enroll, svc, d, est_secrets[d]) for d in devices]
        scep_f = [pool.submit(_scep_enroll, svc, ra, otp, f"scep-{i}.workers.test") for i, otp in enumerate(otps)]
        acme_certs = [f.result() for f in acme_f]
        est_certs = [issued_cert(f.result()) for f in est_f]
        scep = [f.result() for f in scep_f]
    assert all(status == SUCCESS and cert is not None for status, cert in scep), scep
    certs = acme_certs + est_certs + [c for _, c in scep if c is not None]
    assert len(certs) == 16
    assert len({c.serial_number for c in certs}) == 16, "no duplicated serials"
    assert svc.cert_count() == before + 16, "every issued certificate recorded, nothing twice"
    stored = set(svc.serials())
    assert all(format(c.serial_number, "x") in stored for c in certs)


def test_one_time_secrets_and_nonces_are_redeemed_once(svc: Svc) -> None:
    before = svc.cert_count()
    # a SCEP one-time password sent by six requesters at once
    ra = ScepHttp(f"{svc.server.http_url}/scep").ra()
    otp = _scep_otp(svc)
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda i: _scep_enroll(svc, ra, otp, f"race-{i}.workers.test"), range(6)))
    assert sorted(s for s, _ in results) == [SUCCESS] + [FAILURE] * 5, results
    # an EST device secret used by six clients at once
    secret = _est_secrets(svc, ["wrace"])["wrace"]
    with ThreadPoolExecutor(6) as pool:
        codes = sorted(r.status_code for r in pool.map(lambda _: _est_enroll(svc, "wrace", secret), range(6)))
    assert codes == [200, 403, 403, 403, 403, 403], codes
    assert svc.cert_count() == before + 2
    # one ACME nonce in six concurrent requests on six connections
    acme = AcmeServer(svc.server, svc.http01_port, 0)
    raw = RawClient(acme)
    assert raw.register(_eab(svc)).status_code == 201
    nonce = raw.nonce()
    assert raw.kid is not None
    body = jws(raw.key, raw.kid, None, nonce=nonce, kid=raw.kid)
    barrier = threading.Barrier(6)

    def post(_: int) -> httpx.Response:
        with acme.client() as c:
            c.get(acme.directory)  # connect first, then fire together
            barrier.wait()
            return c.post(raw.kid, json=body, headers={"content-type": "application/jose+json"})  # type: ignore[arg-type]

    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(post, range(6)))
    ok = [r for r in responses if r.status_code == 200]
    assert len(ok) == 1, [(r.status_code, r.text[:200]) for r in responses]
    assert all(problem_type(r) == "badNonce" for r in responses if r.status_code != 200)
    raw.http.close()


def test_background_tasks_run_in_exactly_one_worker(svc: Svc) -> None:
    deadline = time.monotonic() + 30
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = task_processes(metrics(svc))
        if set(counts) >= TASKS:
            break
        time.sleep(0.5)
    assert set(counts) >= TASKS, counts
    assert all(n == 1 for n in counts.values()), counts


def test_killed_worker_is_replaced_and_metrics_count_the_service(svc: Svc) -> None:
    pids = worker_pids(svc.server)
    # requests spread over the workers, counted once each by /metrics whichever worker answers it
    def core_200(text: str) -> int:
        m = re.search(r'ikepki_http_requests_total\{listener="http",mount="core",status="200"\} (\d+)', text)
        return int(m.group(1)) if m else 0

    base = core_200(metrics(svc))
    for _ in range(30):
        with socket.create_connection(("127.0.0.1", svc.server.http_port), timeout=10) as sock:
            http_get(sock, "/ca/root.der")
    deadline = time.monotonic() + 20
    while core_200(metrics(svc)) < base + 30 + 1 and time.monotonic() < deadline:
        time.sleep(0.3)
    time.sleep(1.5)  # every worker has written its counters once since (snapshots are 1 s apart)
    total = core_200(metrics(svc))
    assert base + 30 <= total <= base + 30 + 40, (base, total)  # + the /metrics scrapes themselves

    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 90
    now_pids: set[int] = set()
    while time.monotonic() < deadline:
        now_pids = worker_pids(svc.server)
        if len(now_pids) == WORKERS and victim not in now_pids:
            try:
                if httpx.get(f"{svc.server.http_url}/healthz", timeout=5).status_code == 200:
                    counts = task_processes(metrics(svc))
                    if set(counts) >= TASKS:
                        break
            except httpx.HTTPError:
                pass
        time.sleep(0.5)
    assert len(now_pids) == WORKERS and victim not in now_pids, now_pids
    assert svc.server.process.poll() is None
    assert "starting a new one" in svc.server.log.read_text()
    # counters of the dead worker are kept; the background tasks still run exactly once
    assert core_200(metrics(svc)) >= total
    deadline = time.monotonic() + 30
    counts = task_processes(metrics(svc))
    while not (set(counts) >= TASKS and all(n == 1 for n in counts.values())) and time.monotonic() < deadline:
        time.sleep(0.5)
        counts = task_processes(metrics(svc))
    assert set(counts) >= TASKS and all(n == 1 for n in counts.values()), counts
    # OCSP from the new set of workers: a fresh nonce response for a certificate we issued
    assert _ocsp_status(svc) == ocsp.OCSPCertStatus.GOOD


def _ocsp_status(svc: Svc) -> ocsp.OCSPCertStatus:
    with sqlite3.connect(svc.server.dir / "ikepki.db") as conn:
        der = conn.execute("select der from certificates where status='valid' limit 1").fetchone()[0]
    cert = x509.load_der_x509_certificate(bytes(der))
    issuer = next(x509.load_pem_x509_certificate(p.read_bytes()) for p in (svc.server.dir / "ca").glob("*.pem")
                  if x509.load_pem_x509_certificate(p.read_bytes()).subject == cert.issuer)
    req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256()) \
        .add_extension(x509.OCSPNonce(os.urandom(16)), critical=False).build()
    r = httpx.post(f"{svc.server.http_url}/ocsp", content=req.public_bytes(serialization.Encoding.DER),
                   headers={"content-type": "application/ocsp-request"}, timeout=30)
    resp = ocsp.load_der_ocsp_response(r.content)
    return resp.certificate_status


def test_sigterm_stops_every_worker(tmp_path: Path) -> None:
    directory = init_deployment_dir(tmp_path / "ikepki")
    server = start_server(directory, extra_args=("--workers", "2", "--no-workers"))
    pids = worker_pids(server)
    assert len(pids) == 2
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.http_port), timeout=2).close()


def test_default_workers_follow_cpus_and_the_cgroup_quota(tmp_path: Path) -> None:
    from ca.service.supervisor import default_workers

    cpus = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    assert default_workers(3, cpu_max) == 3
    assert default_workers(0, cpu_max) == cpus  # no cgroup file
    cpu_max.write_text("max 100000\n")
    assert default_workers(0, cpu_max) == cpus
    cpu_max.write_text("150000 100000\n")  # 1.5 CPUs -> 2 workers at most
    assert default_workers(0, cpu_max) == min(cpus, 2)
    cpu_max.write_text("50000 100000\n")
    assert default_workers(0, cpu_max) == 1


def test_shared_listener_is_tcp_with_nodelay() -> None:
    """Responses leave in two writes (head, body): without TCP_NODELAY on the connections a worker
    accepts from the shared socket, Nagle + delayed ACK stalls every keep-alive request ~40 ms."""
    from ca.service.supervisor import bind

    sock = bind("127.0.0.1", 0, 16)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        with socket.create_connection(sock.getsockname()) as client:
            accepted, _ = sock.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            del client
    finally:
        sock.close()
