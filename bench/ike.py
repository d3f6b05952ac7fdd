"""IKE_SA setup rate and latency: ikepki responder vs strongSwan charon as responder.

Both responders use the same gateway certificate and root; several charon initiators
(each in its own private /run mount namespace, as in the strongSwan note §1) bring up
childless IKE SAs (aes256gcm16-prfsha256-ecp256, P-256 certificates) over VICI, all
threads at once. Prints establishments/s, p50/p99 setup latency and the ratios.

    sudo .venv/bin/python bench/ike.py [--initiators 3] [--per-initiator 30]

Needs root, unshare and /usr/lib/ipsec/charon. Reuses the test helpers in tests/gateway.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "gateway"))

from gw_pki import build_pki, make_leaf
from gw_procs import Charon, Conn, ResponderProc, free_port, free_udp_pair

PROPOSALS = "aes256gcm16-prfsha256-ecp256"


@dataclass(frozen=True)
class Result:
    name: str
    ok: int
    failed: int
    seconds: float
    latencies: tuple[float, ...]

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


def charon_responder(state: Path, port: int, nat: int, pki_dir: Path) -> Charon:
    """A charon daemon configured as responder with the gateway's certificate."""
    ch = Charon(state, port, nat)
    state.mkdir()
    gw_pem = (pki_dir / "gw.pem").read_bytes().split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    ch.write_config([], 0, {"gw": (gw_pem, (pki_dir / "gw.key").read_bytes())},
                    {"root": (pki_dir / "root.pem").read_bytes()})
    (state / "swanctl" / "swanctl.conf").write_text(f"""connections {{
  rw {{
    version = 2
    local_addrs = 127.0.0.1
    local_port = {port}
    proposals = {PROPOSALS}
    mobike = no
    unique = never
    local {{
      auth = pubkey
      certs = gw.pem
      id = gw.example.test
    }}
    remote {{
      auth = pubkey
      revocation = relaxed
    }}
  }}
}}
""")
    return ch


def drive(initiators: list[Charon], prefix: str, per: int) -> Result:
    lat: list[float] = []
    failed = [0]
    lock = threading.Lock()

    def worker(ch: Charon) -> None:
        for i in range(per):
            t0 = time.perf_counter()
            ok, log = ch.initiate(f"{prefix}{i}", timeout_ms=20000)
            if not ok and failed[0] == 0:
                print(log[-1500:], file=sys.stderr)
            dt = time.perf_counter() - t0
            with lock:
                if ok:
                    lat.append(dt)
                else:
                    failed[0] += 1

    threads = [threading.Thread(target=worker, args=(ch,)) for ch in initiators]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for ch in initiators:
        for i in range(per):
            ch.terminate(f"{prefix}{i}")
    return Result(prefix, len(lat), failed[0], elapsed, tuple(lat))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--initiators", type=int, default=3)
    ap.add_argument("--per-initiator", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ikebench-") as tmp:
        d = Path(tmp)
        pki = build_pki()
        pki.write(d)
        (d / "py").mkdir()
        py = ResponderProc(d / "py", free_port(), free_port(1), [
            "--cert", str(d / "gw.pem"), "--key", str(d / "gw.key"), "--ca-bundle", str(d / "root.pem"),
            "--ocsp", "off", "--cookie-threshold", "100000"])
        sw_port, sw_nat = free_udp_pair()
        sw = charon_responder(d / "sw", sw_port, sw_nat, d)
        initiators: list[Charon] = []
        started: list[ResponderProc | Charon] = []
        try:
            for proc in (py, sw):
                proc.start()
                started.append(proc)
            for n in range(args.initiators):
                client = make_leaf(pki.root, f"bench{n}", email=f"bench{n}@example.test", ou="staff")
                port, nat = free_udp_pair()
                ch = Charon(d / f"ini{n}", port, nat, loglevels="default = 0")
                ch.state.mkdir()
                # distinct rekey_time: charon would otherwise reuse an IKE SA of an equal peer config
                conns = [Conn(f"py{i}", "c", f"bench{n}@example.test", proposals=PROPOSALS, children=False,
                              extra=f"rekey_time = {14400 + i}s") for i in range(args.per_initiator)]
                ch.write_config(conns, py.port, {"c": (client.cert_pem(), client.key_pem())},
                                {"root": pki.root.cert_pem()})
                conf = ch.state / "swanctl" / "swanctl.conf"
                text = conf.read_text().rstrip().rstrip("}")
                text += "".join(Conn(f"sw{i}", "c", f"bench{n}@example.test", proposals=PROPOSALS, children=False,
                                     extra=f"rekey_time = {14400 + i}s").render(sw_port, port)
                                for i in range(args.per_initiator))
                conf.write_text(text + "\n}\n")
                ch.start()
                initiators.append(ch)
                started.append(ch)
            drive(initiators, "py", 2)  # warm-up
            drive(initiators, "sw", 2)
            results = [drive(initiators, "py", args.per_initiator), drive(initiators, "sw", args.per_initiator)]
        finally:
            for proc in reversed(started):
                with contextlib.suppress(Exception):
                    proc.stop()
    report(results, args)


def report(results: list[Result], args: argparse.Namespace) -> None:
    print(f"childless IKE_SA setups, {args.initiators} charon initiators x {args.per_initiator}, {PROPOSALS}")
    print(f"{'responder':<10} {'ok':>5} {'fail':>5} {'setups/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for r in results:
        mean = statistics.fmean(r.latencies) * 1000 if r.latencies else float("nan")
        name = "ikepki" if r.name == "py" else "charon"
        print(f"{name:<10} {r.ok:>5} {r.failed:>5} {r.rate:>9.1f} {r.pct(0.5):>8.1f} {r.pct(0.99):>8.1f} {mean:>8.1f}")
    py, sw = results
    if sw.rate and py.pct(0.99) and sw.pct(0.99):
        print(f"ratio ikepki/charon: rate {py.rate / sw.rate:.2f}x, p99 latency {py.pct(0.99) / sw.pct(0.99):.2f}x")


if __name__ == "__main__":
    main()
