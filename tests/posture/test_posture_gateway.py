"""strongSwan charon with the device's TPM-resident key (strongSwan's tpm plugin on swtpm) against the
bundled responder, all inside a network namespace made by the test, with ``ikepki serve`` (posture on,
push workers on) and the device agent: a compliant device gets the full traffic selectors; tampering
PCR 7 and renewing yields a quarantine certificate that only gets the remediation selectors, and the
downgrade (a hold, pushed) deletes the compliant SA that was still up."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from device_helpers import swtpm_recipe
from gw_procs import Charon, Conn, NetnsLab, netns_lab, start_bundled_responder, start_ikepki
from posture_helpers import GOOD_FACTS, boot, encode_event, write_policy

from ca.oids import POSTURE_COMPLIANT, POSTURE_QUARANTINE
from tests.conftest import IKEPKI, free_port, init_deployment_dir, run_ikepki
from tests.swan_harness import wait_until

pytestmark = pytest.mark.interop
TPM_PORT = 2321
MSSIM_PORT = 2421  # strongSwan's tpm plugin speaks the mssim protocol: mssim_bridge.py in front of swtpm
FULL_TS, REMEDIATION_TS = "10.231.0.0/16", "10.231.9.0/24"


class Lab(NetnsLab):
    """The gateway lab (:class:`gw_procs.NetnsLab`) with swtpm and the device agent inside it."""

    def tpm2(self, *cmd: str) -> None:
        self.run(*cmd, env={"TPM2TOOLS_TCTI": f"swtpm:host=127.0.0.1,port={TPM_PORT}"})

    def measure(self, events: list[tuple[int, bytes]]) -> None:
        for pcr, data in events:
            self.tpm2("tpm2_pcrextend", f"{pcr}:sha256={hashlib.sha256(data).hexdigest()}")

    def agent(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(IKEPKI, "device", *args, "--json", check=False, timeout=180)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if os.geteuid() != 0 or not Path("/dev/net/tun").exists() or not shutil.which("swtpm"):
        pytest.fail("needs root, /dev/net/tun and swtpm (network namespace + kernel-libipsec)")
    base = tmp_path_factory.mktemp("posture-gw")
    with netns_lab(Lab, base, "posture-gw") as lab:
        (base / "tpm").mkdir()
        state = swtpm_recipe._setup_state(base / "tpm")
        lab.start("swtpm", "swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}",
                  "--server", f"type=tcp,port={TPM_PORT},bindaddr=127.0.0.1",
                  "--ctrl", f"type=tcp,port={TPM_PORT + 1},bindaddr=127.0.0.1",
                  "--flags", "not-need-init,startup-clear")
        lab.start("mssim-bridge", sys.executable, str(Path(__file__).parent / "mssim_bridge.py"), str(MSSIM_PORT),
                  str(TPM_PORT))
        init_deployment_dir(lab.dir)
        policy = write_policy(base / "posture.yaml")
        start_ikepki(lab, {"IKEPKI_ATTESTATION_EK_ROOTS": str(base / "tpm" / "ek-roots"),
                           "IKEPKI_POSTURE_POLICY": str(policy)})
        # quarantine first: a quarantine certificate only reaches the remediation network
        start_bundled_responder(
            lab, f"rules:\n  - name: quarantine\n    match:\n      profile: {POSTURE_QUARANTINE.dotted_string}\n"
                 f"    local_ts: ['{REMEDIATION_TS}']\n    remote_ts: ['10.231.2.0/24']\n"
                 f"  - name: compliant\n    match:\n      profile: {POSTURE_COMPLIANT.dotted_string}\n"
                 f"    local_ts: ['{FULL_TS}']\n    remote_ts: ['10.231.2.0/24']\n")
        yield lab


def _charon(lab: Lab, cert_pem: bytes) -> Charon:
    """charon in the namespace; the private key is the TPM's persistent key 0x81000003 (tpm plugin)."""
    charon = Charon(lab.work / "charon", free_port(), free_port(), wrap=lab.wrap,
                    kernel_plugins="kernel-libipsec kernel-netlink tpm",
                    settings=f"plugins {{\n    tpm {{\n      tcti {{\n        name = mssim\n"
                             f"        opts = host=127.0.0.1,port={MSSIM_PORT}\n      }}\n    }}\n  }}")
    charon.state.mkdir(exist_ok=True)
    cacerts = {p: (lab.dir / f).read_bytes() for p, f in (("root", "root-ca.pem"), ("ec", "ca/ec.pem"))}
    conn = Conn("dev", "dev", "asn1dn:#3000",  # the machine certificate has an empty subject
                local_ts="10.231.2.0/24", remote_ts="10.231.0.0/16")
    charon.write_config([conn], lab.ike_port, {"dev": (cert_pem, b"")}, cacerts)
    sw = charon.state / "swanctl"
    (sw / "private" / "dev.pem").unlink()
    conf = (sw / "swanctl.conf").read_text()
    (sw / "swanctl.conf").write_text(conf + "secrets {\n  token-dev {\n    handle = 81000003\n  }\n}\n")
    charon.start()
    return charon


def _child_ts(lab: Lab, serial: str) -> list[str]:
    """The local (responder-side) selectors the responder agreed for the newest CHILD_SA of ``serial``."""
    events = lab.events()
    sas = {e["ike_sa"] for e in events if e["event"] == "ike_sa_up" and e.get("serial") == serial}
    ups = [e for e in events if e["event"] == "child_sa_up" and e.get("ike_sa") in sas]
    assert ups, events[-10:]
    return list(ups[-1]["local_ts"])


def test_posture_selectors_and_downgrade_at_the_gateway(lab: Lab) -> None:
    eab = json.loads(run_ikepki("acme", "eab", "create", "--profile", "machine", "--identifiers", "device:*",
                                "--json", directory=lab.dir).stdout)
    (lab.work / "eab.key").write_text(eab["hmac_key"])
    good = boot()
    lab.measure([(p, d) for p, _, d in good.events])
    (lab.work / "facts.json").write_text(json.dumps(GOOD_FACTS))
    (lab.work / "boot.log").write_bytes(good.log)
    out = lab.work / "device"
    proc = lab.agent("enroll", "--acme", f"https://127.0.0.1:{lab.https_port}/acme/directory",
                     "--tpm", f"swtpm:host=127.0.0.1,port={TPM_PORT}", "--ca-bundle", str(lab.dir / "root-ca.pem"),
                     "--out", str(out), "--facts", str(lab.work / "facts.json"),
                     "--event-log", str(lab.work / "boot.log"), "--eab-kid", eab["kid"],
                     "--eab-hmac-key", str(lab.work / "eab.key"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["posture"]["verdict"] == "compliant"
    cert_pem = (out / "cert.pem").read_bytes()
    compliant = format(x509.load_pem_x509_certificate(cert_pem).serial_number, "x")

    charon = _charon(lab, cert_pem)
    lab.charon = charon
    ok, log = charon.initiate("dev", "net")
    assert ok, log + charon.log()[-3000:]
    assert _child_ts(lab, compliant) == [FULL_TS], lab.events()[-5:]

    # tamper PCR 7, renew: quarantine certificate; the compliant one is held and pushed: its SA goes
    lab.measure([(7, b"db: foreign certificate")])
    (lab.work / "boot.log").write_bytes(good.log + encode_event(7, 0x800000E0, b"db: foreign certificate"))
    proc = lab.agent("renew", "--out", str(out), "--force")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["posture"]["verdict"] == "quarantine"
    assert wait_until(lambda: not any(sa.get("serial") == compliant for sa in lab.responder_sas()), 15), \
        lab.responder_sas()
    assert wait_until(lambda: not charon.sas_of("dev"), 15), "charon kept the SA of the held certificate"

    cert_pem = (out / "cert.pem").read_bytes()
    quarantined = format(x509.load_pem_x509_certificate(cert_pem).serial_number, "x")
    charon.stop()
    charon = _charon(lab, cert_pem)
    lab.charon = charon
    ok, log = charon.initiate("dev", "net")
    assert ok, log + charon.log()[-3000:]
    assert _child_ts(lab, quarantined) == [REMEDIATION_TS], lab.events()[-5:]

    # evidence expiry: with a short max evidence age the certificate ends with its evidence; the SA it
    # authenticated is refused and deleted at the next rekey (no push involved)
    policy = lab.dir.parent / "posture.yaml"
    policy.write_text(policy.read_text().replace("max_evidence_age_seconds: 3600", "max_evidence_age_seconds: 40"))
    proc = lab.agent("renew", "--out", str(out), "--force")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cert_pem = (out / "cert.pem").read_bytes()
    short = x509.load_pem_x509_certificate(cert_pem)
    posture = json.loads((out / "posture.json").read_text())
    assert short.not_valid_after_utc <= datetime.fromisoformat(posture["expires"]) <= \
        datetime.now(UTC) + timedelta(seconds=41)
    charon.stop()
    charon = _charon(lab, cert_pem)
    lab.charon = charon
    ok, log = charon.initiate("dev", "net")
    assert ok, log + charon.log()[-3000:]
    serial = format(short.serial_number, "x")
    assert wait_until(lambda: datetime.now(UTC) > short.not_valid_after_utc + timedelta(seconds=1), 60)
    assert charon.sas_of("dev"), "the SA must still be up before the rekey"
    charon.rekey("dev")
    assert wait_until(lambda: not charon.sas_of("dev"), 15), charon.log()[-3000:]
    downs = [e for e in lab.events() if e["event"] == "ike_sa_down" and e.get("serial") == serial]
    assert downs and "expired at IKE rekey" in downs[-1]["reason"], lab.events()[-5:]
