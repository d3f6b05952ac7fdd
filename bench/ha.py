"""HA scaling on one PostgreSQL: EST issuance with 1 vs 2 `ikepki serve` replicas, and OCSP with
1 vs 2 `ikepki ocsp serve` replicas; CPU seconds of each replica, of PostgreSQL and of the load
generator per run, and the HSM's share (SoftHSM signs in the replica processes: its cost per
signature is measured here and multiplied by the signatures done) — i.e. what saturates first.

    .venv/bin/python bench/ha.py [--seconds 8] [--out bench/out]

Load: wrk (C, keep-alive) with a fixed body per connection: EST `simpleenroll` with the same
PKCS#10 for every request (each is a new certificate: new serial, new DB rows, one HSM signature)
over HTTPS with pipeline Basic auth; OCSP RFC 5019 GET of one nonce-less request (pre-signed
path) over plain HTTP. With 2 replicas, one wrk per replica, each with half the connections.
The machine has 2 vCPUs for everything (replicas, PostgreSQL, wrk): "scaling" here means how
much of the second replica's capacity is left once the first one and the DB are fed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509 import ocsp  # noqa: E402

from tests.conftest import IKEPKI, free_port, run_ikepki, start_server  # noqa: E402
from tests.ha.deployments import EST_PASSWORD, EST_PIPELINE, copy_deployment, write_config  # noqa: E402
from tests.postgres import pg_cluster  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")
HSM_SIGN = r"""
import sys, time
from pathlib import Path
from cryptography.hazmat.primitives.asymmetric import ec
from ca.deployment import Deployment
dep = Deployment.open(Path(sys.argv[1]))
key = dep.issuers["ec"].key
n, t0 = 0, time.process_time()
while time.process_time() - t0 < 1.5:
    key.key.sign(b"x" * 300, ec.ECDSA(key.hash_algorithm)); n += 1
print((time.process_time() - t0) / n)
"""


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError):
            pass
    return total / CLK


def children(pid: int) -> list[int]:
    out = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            pass
    return out


def postgres_pids(datadir: Path) -> list[int]:
    return children(int((datadir / "postmaster.pid").read_text().split()[0]))


def wrk(url: str, seconds: int, conns: int, lua: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "-s", str(lua), url],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def parse_wrk(text: str) -> tuple[int, int]:
    done = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return done, int(bad.group(1)) if bad else 0


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / CLK, sum(fields) / CLK


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


Pids = list[int] | Callable[[], list[int]]


def measure(urls: list[str], seconds: int, conns: int, lua: Path, procs: dict[str, Pids]) -> dict[str, float]:
    pids = {k: v() if callable(v) else v for k, v in procs.items()}
    before = {k: cpu_seconds(v) for k, v in pids.items()}
    wrk0, (busy0, _) = children_cpu(), machine_busy()
    t0 = time.monotonic()
    runs = [wrk(u, seconds, max(1, conns // len(urls)), lua) for u in urls]
    outs = [r.communicate()[0] for r in runs]
    wall = time.monotonic() - t0
    after = {k: cpu_seconds(v) for k, v in pids.items()}
    before["client"], after["client"] = wrk0, children_cpu()
    before["machine"], after["machine"] = busy0, machine_busy()[0]
    done = sum(parse_wrk(o)[0] for o in outs)
    bad = sum(parse_wrk(o)[1] for o in outs)
    if bad:
        raise SystemExit(f"{bad} non-2xx responses:\n" + "\n".join(outs))
    row = {"rps": done / wall, "requests": done, "wall": wall}
    row.update({f"cpu_{k}": (after[k] - before[k]) / wall for k in after})
    return row


def lua_file(tmp: Path, name: str, method: str, body: bytes | None, headers: dict[str, str]) -> Path:
    lines = [f'wrk.method = "{method}"']
    if body is not None:
        (tmp / f"{name}.body").write_bytes(body)
        lines.append(f'local f = io.open("{tmp / (name + ".body")}", "rb"); wrk.body = f:read("*all"); f:close()')
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    path = tmp / f"{name}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def csr_der() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "bench-ha")]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("bench-ha.example.test")]), critical=False)
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))


def report(title: str, one: dict[str, float], two: dict[str, float], hsm_share: tuple[float, float] | None) -> dict:
    print(f"\n{title}")
    print(f"  {'':12} {'req/s':>8} {'replicas CPU':>13} {'PostgreSQL CPU':>15} {'wrk CPU':>8} {'machine':>8}" +
          (f" {'HSM (cores)':>12}" if hsm_share else ""))
    for label, row, hsm in (("1 replica", one, hsm_share[0] if hsm_share else None),
                            ("2 replicas", two, hsm_share[1] if hsm_share else None)):
        replicas = row.get("cpu_a", 0) + row.get("cpu_b", 0)
        print(f"  {label:12} {row['rps']:8.1f} {replicas:12.2f}c {row['cpu_pg']:14.2f}c {row['cpu_client']:7.2f}c "
              f"{row['cpu_machine']:7.2f}c" +
              (f" {hsm:11.3f}c" if hsm is not None else ""))
    ratio = two["rps"] / one["rps"]
    ours = sum(two[k] for k in ("cpu_a", "cpu_b", "cpu_pg", "cpu_client"))
    machine, cores = two["cpu_machine"], os.cpu_count() or 1
    top = max(("replicas", two["cpu_a"] + two["cpu_b"]), ("PostgreSQL", two["cpu_pg"]),
              ("load generator (wrk)", two["cpu_client"]), key=lambda kv: kv[1])
    if machine > 0.9 * cores:
        verdict = (f"CPU saturates first: the machine's {cores} cores were {machine / cores:.0%} busy "
                   f"({ours:.2f} cores ours, {max(0.0, machine - ours):.2f} other processes); "
                   f"largest consumer of ours: {top[0]} ({top[1]:.2f} cores)")
    else:
        verdict = (f"not CPU-bound ({machine:.2f} of {cores} cores busy): waiting on the DB (locks, "
                   f"commit latency) or the HSM lock")
    print(f"  scaling 2 vs 1 replica: x{ratio:.2f}; {verdict}")
    return {"one": one, "two": two, "ratio": ratio, "verdict": verdict}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    results: dict[str, object] = {}
    with pg_cluster() as pg, tempfile.TemporaryDirectory(prefix="bench-ha-") as tmpname:
        tmp = Path(tmpname)
        url = pg.createdb("bench_ha")
        dir_a = tmp / "a"
        dir_a.mkdir()
        write_config(dir_a, url)
        run_ikepki("init", directory=dir_a, env={"IKEPKI_DATABASE_URL": url}, timeout=300)
        dir_b = copy_deployment(dir_a, tmp / "b", url)
        hsm_sec = float(subprocess.run([sys.executable, "-c", HSM_SIGN, str(dir_a)], capture_output=True, text=True,
                                       check=True, env={**os.environ, "PYTHONPATH": str(REPO)}).stdout)
        print(f"SoftHSM P-256 signature: {hsm_sec * 1e6:.0f} µs CPU (in the replica process)")
        env = {"IKEPKI_DATABASE_URL": url}
        def pg_pids() -> list[int]:
            return postgres_pids(pg.datadir)

        client: list[int] = []  # wrk: measured as this process's reaped children

        # -- EST issuance ---------------------------------------------------------------------
        est_lua = lua_file(tmp, "est", "POST", base64.b64encode(csr_der()), {
            "Content-Type": "application/pkcs10",
            "Authorization": "Basic " + base64.b64encode(f"{EST_PIPELINE}:{EST_PASSWORD}".encode()).decode()})
        a = start_server(dir_a, env=env, extra_args=("--no-workers",))
        b = start_server(dir_b, env=env, extra_args=("--no-workers",))
        try:
            path = "/.well-known/est/simpleenroll"
            procs: dict[str, Pids] = {"a": [a.process.pid], "b": [b.process.pid], "pg": pg_pids, "client": client}
            measure([a.https_url + path], 2, 2, est_lua, procs)  # warm up both
            measure([b.https_url + path], 2, 2, est_lua, procs)
            one = measure([a.https_url + path], args.seconds, args.conns, est_lua, procs)
            two = measure([a.https_url + path, b.https_url + path], args.seconds, args.conns, est_lua, procs)
            results["est"] = report("EST simpleenroll (HTTPS, pipeline Basic auth), certificates/s:", one, two,
                                    (one["rps"] * hsm_sec, two["rps"] * hsm_sec))
        finally:
            a.stop()
            b.stop()

        # -- OCSP -----------------------------------------------------------------------------
        run_ikepki("issue", "--csr", str(_write(tmp / "o.csr", csr_der())), "--profile", "machine", "--out",
                   str(tmp / "o.pem"), directory=dir_a, env=env)
        cert = x509.load_pem_x509_certificates((tmp / "o.pem").read_bytes())[0]
        issuer = x509.load_pem_x509_certificate((dir_a / "ca" / "ec.pem").read_bytes())
        req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
        get_path = "/ocsp/" + base64.b64encode(req.public_bytes(serialization.Encoding.DER)).decode()
        ocsp_lua = lua_file(tmp, "ocsp", "GET", None, {})
        servers = []
        try:
            for d in (dir_a, dir_b):
                port = free_port()
                log = (d / f"ocsp-{port}.log").open("wb")
                p = subprocess.Popen([IKEPKI, "ocsp", "serve", "--dir", str(d), "--port", str(port), "--no-workers"],
                                     stdout=log, stderr=subprocess.STDOUT, env={**_clean_env(), **env})
                servers.append((p, f"http://127.0.0.1:{port}"))
            for p, base in servers:
                _wait(base, p)
            procs = {"a": [servers[0][0].pid], "b": [servers[1][0].pid], "pg": pg_pids, "client": client}
            for _, base in servers:
                measure([base + get_path], 2, 2, ocsp_lua, procs)  # pre-sign, warm up
            one = measure([servers[0][1] + get_path], args.seconds, args.conns, ocsp_lua, procs)
            two = measure([s[1] + get_path for s in servers], args.seconds, args.conns, ocsp_lua, procs)
            results["ocsp"] = report("OCSP GET, one nonce-less request (pre-signed path), responses/s:", one, two,
                                     None)
        finally:
            for p, _ in servers:
                p.terminate()
                p.wait(10)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ha.json").write_text(json.dumps(results, indent=2))
    return 0


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}


def _wait(base: str, proc: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"ikepki ocsp serve exited ({proc.returncode})")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{base} did not come up")


if __name__ == "__main__":
    raise SystemExit(main())
