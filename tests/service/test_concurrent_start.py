"""Several `ikepki serve` (replicas, each with two workers) starting at the same moment on one
SoftHSM token: every one comes up. SoftHSM answers some concurrent opens with CKR_GENERAL_ERROR or
lists no token for a moment; the supervisor's own open is retried (and the module re-read) like a
worker's, instead of exiting 6 with "token not found" (2 of 15 starts did, before)."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.conftest import Server, init_deployment_dir, start_server

REPLICAS = 4


def test_replicas_starting_together_on_one_token_all_come_up(tmp_path: Path) -> None:
    directory = init_deployment_dir(tmp_path / "ikepki")
    started: list[Server] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            started.append(start_server(directory, extra_args=("--workers", "2")))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(REPLICAS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]
        assert len(started) == REPLICAS
    finally:
        for server in started:
            server.stop()
