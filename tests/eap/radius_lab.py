"""Real peers for the EAP tests: an ikepki deployment (CA + `ikepki ocsp serve`), Debian's
FreeRADIUS 3.2.1 with a private configuration written here, and wpa_supplicant's eapol_test."""

from __future__ import annotations

import base64
import grp
import hashlib
import hmac
import os
import shutil
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import IKEPKI, free_port, init_deployment_dir, run_ikepki
from tests.swan_harness import await_ready, stop_process
from tests.swan_harness import free_port as free_udp

FREERADIUS = "/usr/sbin/freeradius"
EAPOL_TEST = "/usr/bin/eapol_test"


def totp(secret_b32: str, at: float | None = None, step: int = 30, digits: int = 6) -> str:
    """RFC 6238 TOTP (HMAC-SHA1), the algorithm rlm_totp implements."""
    counter = int((time.time() if at is None else at) // step)
    mac = hmac.new(base64.b32decode(secret_b32), struct.pack(">Q", counter), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    code = (int.from_bytes(mac[off : off + 4], "big") & 0x7FFFFFFF) % 10**digits
    return str(code).zfill(digits)


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@dataclass
class Credential:
    cert: Path  # leaf then chain
    key: Path
    serial_hex: str

    def leaf_pem(self) -> bytes:
        return self.cert.read_bytes().split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"


@dataclass
class IkepkiPki:
    """An ikepki deployment used through its CLI, and its OCSP responder as a process."""

    dir: Path
    ocsp_port: int
    proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls, base: Path) -> IkepkiPki:
        port = free_port()
        d = init_deployment_dir(base / "ikepki", f"public_base_url: http://127.0.0.1:{port}\n")
        return cls(d, port)

    @property
    def ocsp_url(self) -> str:
        return f"http://127.0.0.1:{self.ocsp_port}/ocsp"

    @property
    def roots(self) -> Path:
        return self.dir / "root-ca.pem"

    def chain_pem(self) -> bytes:
        return (self.dir / "ca" / "ec.pem").read_bytes() + self.roots.read_bytes()

    def start_ocsp(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
        log = (self.dir / "ocsp-serve.log").open("wb")
        self.proc = subprocess.Popen([IKEPKI, "ocsp", "serve", "--dir", str(self.dir), "--port", str(self.ocsp_port)],
                                     stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        await_ready(self.proc, lambda: httpx.get(f"http://127.0.0.1:{self.ocsp_port}/healthz", timeout=1).status_code
                    == 200, what="ikepki ocsp serve", timeout=60, step=0.2, errors=(httpx.HTTPError,),
                    log=(self.dir / "ocsp-serve.log").read_text)

    def stop(self) -> None:
        stop_process(self.proc, timeout=10)

    def issue(self, name: str, profile: str, subject: str, san: str, out: Path) -> Credential:
        out.mkdir(parents=True, exist_ok=True)
        key, csr, cert = out / f"{name}.key", out / f"{name}.csr", out / f"{name}.pem"
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key),
                "-out", str(csr), "-subj", subject, "-addext", f"subjectAltName={san}")
        proc = run_ikepki("issue", "--csr", str(csr), "--profile", profile, "--out", str(cert), "--json",
                          directory=self.dir)
        import json

        return Credential(cert, key, json.loads(proc.stdout)["serial"])

    def revoke(self, serial_hex: str) -> None:
        run_ikepki("revoke", serial_hex, "--reason", "keyCompromise", "--yes", directory=self.dir)


USERS = """\
alice@example.test
\tFilter-Id := "staff", Class := 0x7374616666, Acct-Interim-Interval := 2

bob@example.test
\tFilter-Id := "guests", Class := 0x6775657374, Framed-IP-Address := 10.231.9.7

rita@example.test
\tFilter-Id := "staff"

dora@example.test
\tFilter-Id := "staff", Session-Timeout := {timeout}

tina\tTOTP-Secret := "{totp_secret}"
\tFilter-Id := "staff", Session-Timeout := {timeout}

carl\tTOTP-Secret := "{totp_secret}"
\tFilter-Id := "staff", Class := 0x7374616666
"""


@dataclass
class FreeRadius:
    """freeradius -X with a private raddb (owned by group freerad, readable by it)."""

    secret: str
    server: Credential
    ca_pem: bytes
    ocsp_url: str
    totp_secret: str = "JBSWY3DPEHPK3PEEJBSWY3DP"
    session_timeout: int = 3600
    require_ma: bool = True
    ocsp: bool = True
    wrap: tuple[str, ...] = ()  # e.g. ("ip", "netns", "exec", NS)
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="eap-raddb-")))
    auth_port: int = 0
    acct_port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.dir / "radiusd.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def write(self) -> None:
        d = self.dir
        self.auth_port = self.auth_port or free_udp()
        self.acct_port = self.acct_port or free_udp()
        for sub in ("certs", "run", "log", "acct"):
            (d / sub).mkdir(exist_ok=True)
        shutil.copy(self.server.key, d / "certs" / "server.key")
        (d / "certs" / "server.pem").write_bytes(self.server.cert.read_bytes())
        (d / "certs" / "ca.pem").write_bytes(self.ca_pem)
        (d / "dictionary").write_text("")
        (d / "users").write_text(USERS.format(timeout=self.session_timeout, totp_secret=self.totp_secret))
        (d / "radiusd.conf").write_text(f"""
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = {d}/log
raddbdir = {d}
radacctdir = {d}/acct
name = freeradius
confdir = {d}
modconfdir = {d}
certdir = {d}/certs
cadir = {d}/certs
run_dir = {d}/run
db_dir = {d}
libdir = /usr/lib/freeradius
pidfile = {d}/run/freeradius.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 1024
hostname_lookups = no
log {{
  destination = stdout
  colourise = no
  auth = yes
  auth_badpass = no
  auth_goodpass = no
}}
security {{
  user = freerad
  group = freerad
  allow_core_dumps = no
  max_attributes = 200
  reject_delay = 0
  status_server = yes
}}
thread pool {{
  start_servers = 2
  max_servers = 4
  min_spare_servers = 1
  max_spare_servers = 3
  max_requests_per_server = 0
  auto_limit_acct = no
}}
client gateway {{
  ipaddr = 127.0.0.1
  secret = {self.secret}
  require_message_authenticator = {"yes" if self.require_ma else "no"}
  nas_type = other
}}
modules {{
  eap {{
    default_eap_type = tls
    timer_expire = 60
    ignore_unknown_eap_types = no
    max_sessions = 1024
    tls-config tls-common {{
      private_key_file = {d}/certs/server.key
      certificate_file = {d}/certs/server.pem
      ca_file = {d}/certs/ca.pem
      cipher_list = "DEFAULT"
      tls_min_version = "1.2"
      tls_max_version = "1.2"
      ecdh_curve = "prime256v1"
      check_crl = no
      cache {{
        enable = no
      }}
      ocsp {{
        enable = {"yes" if self.ocsp else "no"}
        override_cert_url = yes
        url = "{self.ocsp_url}"
        use_nonce = yes
        timeout = 2
        softfail = no
      }}
    }}
    tls {{
      tls = tls-common
    }}
    gtc {{
      challenge = "TOTP code: "
      auth_type = totp
    }}
  }}
  files {{
    filename = {d}/users
  }}
  totp {{
  }}
  always ok {{
    rcode = ok
  }}
  always reject {{
    rcode = reject
  }}
  linelog acctlog {{
    filename = {d}/acct/accounting.log
    format = "%{{Acct-Status-Type}} %{{User-Name}} %{{Acct-Session-Id}} %{{%{{Acct-Session-Time}}:-0}} \
%{{%{{Acct-Terminate-Cause}}:-none}}"
  }}
}}
server default {{
  listen {{
    type = auth
    ipaddr = 127.0.0.1
    port = {self.auth_port}
  }}
  listen {{
    type = acct
    ipaddr = 127.0.0.1
    port = {self.acct_port}
  }}
  authorize {{
    files
    eap {{
      ok = return
    }}
  }}
  authenticate {{
    eap
    Auth-Type totp {{
      update request {{
        &TOTP-Password := &User-Password
      }}
      totp
    }}
  }}
  preacct {{
  }}
  accounting {{
    acctlog
    ok
  }}
  post-auth {{
    # EAP-TLS: the EAP identity (whose reply attributes the users file gives) must be the
    # certificate's email SAN, or anyone with a valid user certificate could claim anyone's policy
    if (&TLS-Client-Cert-Subject-Alt-Name-Email && \
        &TLS-Client-Cert-Subject-Alt-Name-Email != &User-Name) {{
      update reply {{
        &Reply-Message := "EAP identity is not the certificate's email"
      }}
      reject
    }}
    Post-Auth-Type REJECT {{
      eap
    }}
  }}
}}
""")
        gid = grp.getgrnam("freerad").gr_gid
        for p in [d, *d.rglob("*")]:
            os.chown(p, 0, gid)
            os.chmod(p, 0o770 if p.is_dir() else 0o660)

    def start(self) -> None:
        self.write()
        out = self.log_path.open("wb")
        self.proc = subprocess.Popen([*self.wrap, FREERADIUS, "-X", "-d", str(self.dir)], stdout=out,
                                     stderr=subprocess.STDOUT,
                                     start_new_session=True)
        await_ready(self.proc, lambda: "Ready to process requests" in self.log(), what="freeradius", timeout=20,
                    step=0.1, log=self.log)

    def stop(self) -> None:
        stop_process(self.proc)

    def cleanup(self, keep: Path | None = None) -> None:
        """Stop and remove the private raddb; ``keep``: copy the debug log there first."""
        self.stop()
        if keep is not None and self.log_path.exists():
            shutil.copy(self.log_path, keep)
        shutil.rmtree(self.dir, ignore_errors=True)

    def accounting(self) -> list[str]:
        p = self.dir / "acct" / "accounting.log"
        return p.read_text().splitlines() if p.exists() else []


def eapol_test(conf: str, work: Path, port: int, secret: str, timeout: int = 15, no_msk: bool = False
               ) -> subprocess.CompletedProcess[str]:
    """wpa_supplicant's eapol_test as an independent EAP peer of the RADIUS server (``no_msk``: -n,
    for methods without keys such as GTC)."""
    path = work / f"eapol-{time.monotonic_ns()}.conf"
    path.write_text(conf)
    return subprocess.run([EAPOL_TEST, "-c", str(path), "-a", "127.0.0.1", "-p", str(port), "-s", secret, "-r0",
                           f"-t{timeout}", *(["-n"] if no_msk else [])],
                          capture_output=True, text=True, timeout=timeout + 10, check=False)
