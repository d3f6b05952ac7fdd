"""A raw ASGI prefix router (no framework on the hot path: OCSP lives behind it) plus the
core endpoints every listener has: /healthz, /readyz, /metrics, /ca/<id>.der|.pem."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.serialization import Encoding

from ca.service.mounts import ASGIApp, HttpMount, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from ca.deployment import Deployment


async def send_bytes(send: Send, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
                     headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class Metrics:
    """Request counters in Prometheus text format (exposition format 0.0.4).

    With several serving processes (``ikepki serve --workers N``) every worker writes a snapshot of
    its counters into ``share_dir`` (``<pid>.json``, replaced atomically about once a second and at
    exit), and ``/metrics`` answers the sum over all of them with its own live counters, so a scrape
    reports the service whichever worker takes it. Snapshots of workers that died stay in the sum
    (counters never go down); the supervisor removes the directory when the service stops."""

    FLUSH_SECONDS = 1.0

    def __init__(self, share_dir: Path | None = None, started: float | None = None) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.started = started or time.time()
        self.share_dir = share_dir
        self._own = f"{os.getpid()}.json"
        self.running_tasks: Callable[[], list[str]] = list  # background tasks alive in this process

    def flush(self) -> None:
        """Write this worker's snapshot (no-op in a single process)."""
        if self.share_dir is None:
            return
        tmp = self.share_dir / f".{self._own}.tmp"
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps({"requests": [[*k, n] for k, n in self.requests.items()],
                                       "tasks": self.running_tasks()}))
            tmp.replace(self.share_dir / self._own)

    async def flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.FLUSH_SECONDS)
            self.flush()

    def totals(self) -> tuple[Counter[tuple[str, str, int]], Counter[str]]:
        """Request counters (this process live, plus every other worker's last snapshot, dead ones
        included) and how many live processes run each background task."""
        requests, tasks = Counter(self.requests), Counter(self.running_tasks())
        if self.share_dir is None:
            return requests, tasks
        for path in self.share_dir.glob("*.json"):
            if path.name == self._own:
                continue
            with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
                snap = json.loads(path.read_text())
                for listener, mount, status, n in snap["requests"]:
                    requests[(str(listener), str(mount), int(status))] += int(n)
                if _alive(int(path.stem)):
                    tasks.update(str(t) for t in snap["tasks"])
        return requests, tasks

    def render(self, extra: dict[str, float] | None = None) -> bytes:
        lines = ["# HELP ikepki_http_requests_total HTTP requests by listener, mount and status.",
                 "# TYPE ikepki_http_requests_total counter"]
        requests, tasks = self.totals()
        for (listener, mount, status), n in sorted(requests.items()):
            lines.append(f'ikepki_http_requests_total{{listener="{listener}",mount="{mount}",status="{status}"}} {n}')
        lines += ["# HELP ikepki_background_task_processes Processes running each background task (1: exactly once).",
                  "# TYPE ikepki_background_task_processes gauge"]
        lines += [f'ikepki_background_task_processes{{task="{t}"}} {n}' for t, n in sorted(tasks.items())]
        lines += ["# TYPE ikepki_process_start_time_seconds gauge", f"ikepki_process_start_time_seconds {self.started}"]
        for name, value in (extra or {}).items():
            lines += [f"# TYPE {name} gauge", f"{name} {value}"]
        return ("\n".join(lines) + "\n").encode()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Router:
    """Dispatch by longest matching path prefix; core endpoints first."""

    def __init__(self, listener: str, mounts: list[HttpMount], deployment: Deployment, metrics: Metrics,
                 readiness: Callable[[], dict[str, bool]], liveness: Callable[[], list[str]] = list) -> None:
        self.listener = listener
        self.liveness = liveness
        self.mounts = sorted((m for m in mounts if listener in m.listeners), key=lambda m: -len(m.prefix))
        self.deployment = deployment
        self.metrics = metrics
        self.readiness = readiness
        self._ca_files = self._ca_documents()

    def _ca_documents(self) -> dict[str, tuple[bytes, str]]:
        out: dict[str, tuple[bytes, str]] = {}
        try:
            certs = {"root": self.deployment.root, **{i: iss.certificate for i, iss in self.deployment.issuers.items()}}
        except Exception:
            return out
        for name, cert in certs.items():
            out[f"/ca/{name}.der"] = (cert.public_bytes(Encoding.DER), "application/pkix-cert")
            out[f"/ca/{name}.pem"] = (cert.public_bytes(Encoding.PEM), "application/x-pem-file")
        return out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off: mounted apps start lazily
            return
        path: str = scope["path"]
        status_box: dict[str, int] = {}

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box["s"] = message["status"]
            await send(message)

        mount_name = "core"
        try:
            if not await self._core(path, scope, counting_send):
                mount = next((m for m in self.mounts if path == m.prefix or path.startswith(m.prefix.rstrip("/") + "/")
                              or (m.prefix.endswith("/") and path.startswith(m.prefix))), None)
                if mount is None:
                    await send_bytes(counting_send, 404, b"not found\n")
                else:
                    mount_name = mount.name
                    await mount.app(_strip(scope, mount) if mount.strip_prefix else scope, receive, counting_send)
        finally:
            self.metrics.requests[(self.listener, mount_name, status_box.get("s", 0))] += 1

    async def _core(self, path: str, scope: Scope, send: Send) -> bool:
        if path == "/healthz":  # liveness: the background tasks run (ca/service/liveness.py)
            problems = self.liveness()
            await send_bytes(send, 503 if problems else 200,
                             "".join(f"FAIL {p}\n" for p in problems).encode() or b"ok\n")
        elif path == "/readyz":
            checks = self.readiness()
            body = "".join(f"{k}: {'ok' if v else 'FAIL'}\n" for k, v in checks.items()).encode()
            await send_bytes(send, 200 if all(checks.values()) else 503, body)
        elif path == "/metrics":
            await send_bytes(send, 200, self.metrics.render(), "text/plain; version=0.0.4")
        elif path in self._ca_files and scope["method"] in ("GET", "HEAD"):
            body, ctype = self._ca_files[path]
            await send_bytes(send, 200, body, ctype, [(b"cache-control", b"max-age=3600")])
        else:
            return False
        return True


def _strip(scope: Scope, mount: HttpMount) -> Scope:
    prefix = mount.prefix.rstrip("/")
    new = dict(scope)
    new["path"] = scope["path"][len(prefix):] or "/"
    new["root_path"] = scope.get("root_path", "") + prefix
    return new


def app_for(listener: str, mounts: list[HttpMount], deployment: Deployment, metrics: Metrics,
            readiness: Callable[[], dict[str, bool]], liveness: Callable[[], list[str]] = list) -> ASGIApp:
    return Router(listener, mounts, deployment, metrics, readiness, liveness)
