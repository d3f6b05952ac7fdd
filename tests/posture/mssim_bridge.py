"""Protocol adapter: the Microsoft TPM simulator wire protocol (what tpm2-tss's ``mssim`` TCTI speaks,
the only socket TCTI strongSwan's tpm plugin accepts) in front of swtpm's raw TPM command socket.

Command port: ``u32 TPM_SEND_COMMAND(8) | u8 locality | u32 size | command`` → ``u32 size | response |
u32 0``; platform port: every ``u32`` signal (power on, NV on, …) is acknowledged with ``u32 0``;
``SESSION_END`` (20) closes. Each TPM command goes to swtpm over a fresh connection, so other clients
(the device agent, tpm2-tools) can use the same swtpm between charon's commands. The TPM itself is
the real swtpm; nothing is emulated here but the framing.

Usage: ``python mssim_bridge.py LISTEN_PORT SWTPM_PORT`` (platform port = LISTEN_PORT + 1).
"""

from __future__ import annotations

import socket
import struct
import sys
import threading

SEND_COMMAND, SESSION_END, STOP = 8, 20, 21


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _tpm(command: bytes, port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as tpm:
        tpm.sendall(command)
        header = _read(tpm, 10)
        (size,) = struct.unpack(">I", header[2:6])
        return header + _read(tpm, size - 10)


def _command_client(conn: socket.socket, swtpm_port: int) -> None:
    with conn:
        try:
            while True:
                (cmd,) = struct.unpack(">I", _read(conn, 4))
                if cmd in (SESSION_END, STOP):
                    return
                if cmd != SEND_COMMAND:
                    conn.sendall(struct.pack(">I", 0))
                    continue
                _read(conn, 1)  # locality
                (size,) = struct.unpack(">I", _read(conn, 4))
                response = _tpm(_read(conn, size), swtpm_port)
                conn.sendall(struct.pack(">I", len(response)) + response + struct.pack(">I", 0))
        except (ConnectionError, OSError):
            return


def _platform_client(conn: socket.socket) -> None:
    with conn:
        try:
            while True:
                (cmd,) = struct.unpack(">I", _read(conn, 4))
                if cmd in (SESSION_END, STOP):
                    return
                conn.sendall(struct.pack(">I", 0))
        except (ConnectionError, OSError):
            return


def _serve(port: int, handler: object, *args: object) -> None:
    srv = socket.create_server(("127.0.0.1", port), reuse_port=False)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handler, args=(conn, *args), daemon=True).start()  # type: ignore[arg-type]


if __name__ == "__main__":
    listen, swtpm = int(sys.argv[1]), int(sys.argv[2])
    threading.Thread(target=_serve, args=(listen + 1, _platform_client), daemon=True).start()
    _serve(listen, _command_client, swtpm)
