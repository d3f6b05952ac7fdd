"""Where one ACME order's server time goes: SQL statements per request (counted with a SQLAlchemy
``before_cursor_execute`` hook) and a cProfile of the serving process, for a number of complete
orders (new order, http-01, poll, finalize, download) by one client, as in ``bench/acme.py``.

    .venv/bin/python bench/acme_profile.py [--orders 30] [--profile] [--top 30]

The server is ``ikepki serve --workers 1`` over a fresh ``ikepki init`` deployment (SQLite + SoftHSM),
run through this file's ``serve`` mode so the hooks live in the serving process; the counts are
written when it stops (SIGTERM). Diagnostic only: no peer, no ratio.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import cProfile
import importlib.util
import io
import json
import os
import pstats
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
IKEPKI = str(Path(sys.executable).with_name("ikepki"))
_ROUTE = re.compile(r"/(acct|order|authz|chall|cert)/[^/]+")


def _bench_acme() -> Any:
    """bench/acme.py (its helpers: responder, client, one order) under a name that is not ``acme``."""
    spec = importlib.util.spec_from_file_location("bench_acme", HERE / "acme.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_acme"] = module
    spec.loader.exec_module(module)
    return module


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(out: Path, profile: bool, argv: list[str]) -> None:
    """Run ``ikepki serve`` in this process with a statement counter per ACME route (and cProfile)."""
    import atexit

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from ca.authority import Authority
    from enrollment.acme.authorizations import Authorizations
    from enrollment.acme.service import AcmeService

    local = threading.local()
    counts: collections.Counter[str] = collections.Counter()
    statements: collections.Counter[str] = collections.Counter()

    @event.listens_for(Engine, "before_cursor_execute")
    def _count(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        route = getattr(local, "route", "other")
        where = f"{route} [issue]" if getattr(local, "issuing", False) else route
        counts[where] += 1
        statements[f"{where}: {' '.join(statement.split())[:110]}"] += 1

    @event.listens_for(Engine, "begin")
    def _begin(conn: Any) -> None:
        route = getattr(local, "route", "other")
        where = f"{route} [issue]" if getattr(local, "issuing", False) else route
        counts[f"{where} (transactions)"] += 1

    def wrap(label: Any, fn: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            before = getattr(local, "route", None)
            local.route = label(*args)
            try:
                return fn(*args, **kwargs)
            finally:
                local.route = before
        return wrapped

    def route_of(_self: Any, ctx: Any) -> str:
        return f"{ctx.method} {_ROUTE.sub(lambda m: f'/{m.group(1)}/ID', ctx.path)}"

    AcmeService.handle = wrap(route_of, AcmeService.handle)  # type: ignore[method-assign]
    Authorizations._validate = wrap(lambda *a: "validation", Authorizations._validate)  # type: ignore[method-assign]
    issue = Authority.issue

    def issuing(self: Any, *args: Any, **kwargs: Any) -> Any:
        local.issuing = True
        try:
            return issue(self, *args, **kwargs)
        finally:
            local.issuing = False
    Authority.issue = issuing  # type: ignore[method-assign]

    profiles: list[cProfile.Profile] = []  # one per thread (Python 3.11 profiles per thread)

    def start_profile(*_: Any) -> None:
        sys.setprofile(None)
        profiles.append(cProfile.Profile(time.thread_time))  # CPU, not GIL waits
        profiles[-1].enable()
    if profile:
        threading.setprofile(start_profile)
        start_profile()

    def dump() -> None:
        text = ""
        if profiles:
            for p in profiles:
                p.disable()
            buf = io.StringIO()
            stats = pstats.Stats(profiles[0], stream=buf)
            for p in profiles[1:]:
                stats.add(p)
            stats.sort_stats("tottime").print_stats(r"^(?!.*(importlib|_bootstrap|typing|pydantic|dataclasses))", 40)
            ours = r"/(ca|enrollment|ocsp)/|ssl|httptools|uvicorn|sqlalchemy/engine/base"
            stats.sort_stats("cumulative").print_stats(ours, 70)
            text = buf.getvalue()
        out.write_text(json.dumps({"counts": counts, "statements": statements, "profile": text}))
    atexit.register(dump)
    signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    sys.argv = [IKEPKI, *argv]
    from ca.cli.main import main as cli_main
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        cli_main()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=30)
    parser.add_argument("--profile", action="store_true", help="also cProfile the serving process")
    parser.add_argument("--top", type=int, default=25, help="statements to list")
    args = parser.parse_args()
    bench = _bench_acme()
    http_port = bench.free_port()
    responder = ThreadingHTTPServer(("127.0.0.1", http_port), bench.Responder)
    threading.Thread(target=responder.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="acme-profile-") as tmp:
        d = Path(tmp)
        (d / "ikepki.yaml").write_text(
            "acme:\n  external_account_required: false\n  rate_limit_per_account: 0\n  rate_limit_per_ip: 0\n"
            f"  http01_port: {http_port}\n  validation_hosts: '*.test=127.0.0.1'\n")
        env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
        subprocess.run([IKEPKI, "init", "--dir", str(d)], check=True, env=env, capture_output=True)
        port = bench.free_port()
        out = d / "counts.json"
        cmd = [sys.executable, __file__, "--serve", str(out), *(["--profile"] if args.profile else []), "--",
               "serve", "--dir", str(d), "--https-port", str(port), "--http-port", str(bench.free_port()),
               "--no-workers", "--workers", "1"]
        proc = subprocess.Popen(cmd, env=env, stdout=(d / "serve.log").open("wb"), stderr=subprocess.STDOUT)
        try:
            target = bench.Target("ikepki", f"https://127.0.0.1:{port}/acme/directory", str(d / "root-ca.pem"),
                                  "bench.test", [])
            bench.wait_url(target.directory, target.ca_bundle)
            cl = bench.new_client(target)
            bench.one_order(cl, "warmup.bench.test")
            t0, cpu0 = time.perf_counter(), _cpu_seconds(proc.pid)
            for i in range(args.orders):
                bench.one_order(cl, f"p{i}.bench.test")
            elapsed, cpu = time.perf_counter() - t0, _cpu_seconds(proc.pid) - cpu0
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            responder.shutdown()
        data = json.loads(out.read_text())
    n = args.orders + 1  # the warm-up order counts too (account creation is spread over it)
    counts, statements = collections.Counter(data["counts"]), collections.Counter(data["statements"])
    print(f"{args.orders} orders in {elapsed:.2f} s ({args.orders / elapsed:.1f} orders/s, one client, "
          f"load {os.getloadavg()[0]:.2f}); server CPU {cpu * 1000 / args.orders:.1f} ms per order"
          + (" (profiled: inflated)" if args.profile else ""))
    print(f"\nSQL statements and transactions (BEGIN) per order by request (over {n} orders incl. warm-up "
          "and account):")
    for where, c in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {c / n:7.2f}  {where}")
    statements_total = sum(c for w, c in counts.items() if not w.endswith("(transactions)"))
    print(f"  {statements_total / n:7.2f}  statements in total")
    print(f"  {(sum(counts.values()) - statements_total) / n:7.2f}  transactions in total")
    print("\nmost frequent statements per order:")
    for text, c in statements.most_common(args.top):
        print(f"  {c / n:6.2f}  {text}")
    if data["profile"]:
        print("\n" + data["profile"])


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        rest = sys.argv[2:]
        split = rest.index("--")
        serve(Path(rest[0]), "--profile" in rest[1:split], rest[split + 1:])
    else:
        main()
