"""The system components the tests run, which Debian package provides each, and which tests
need which package.

`make setup` installs the packages (APT_PACKAGES in the Makefile); this module turns a
component missing on a machine where it did not into one line naming the package, instead of
a stack trace from deep inside a harness (tests/conftest.py: ``pytest_runtest_setup`` checks
an item's NEEDS before its fixtures run; ``pytest_runtest_makereport`` rewrites a
FileNotFoundError for a known program into the same line). A strongSwan plugin is a file, not
a program: charon starts without it and only fails later, so the plugins are listed as files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

PLUGINS = "/usr/lib/ipsec/plugins/libstrongswan-"

# Debian package -> what proves it is installed: a program on PATH, or an absolute file path.
PACKAGES: dict[str, tuple[str, ...]] = {
    "softhsm2": ("softhsm2-util", "/usr/lib/softhsm/libsofthsm2.so"),
    "opensc": ("pkcs11-tool",),
    "openssl": ("openssl",),
    "curl": ("curl",),
    "iproute2": ("ip",),
    "util-linux": ("unshare", "runuser", "nsenter"),
    "strongswan-charon": ("/usr/lib/ipsec/charon",),
    "strongswan-swanctl": ("swanctl",),
    "strongswan-pki": ("pki",),
    "libstrongswan-standard-plugins": tuple(f"{PLUGINS}{p}.so" for p in ("openssl", "gcm", "aesni", "agent")),
    "libstrongswan-extra-plugins": tuple(f"{PLUGINS}{p}.so" for p in ("curl", "chapoly", "curve25519", "pkcs11",
                                                                       "tpm")),
    "libtss2-tcti-mssim0": ("/usr/lib/x86_64-linux-gnu/libtss2-tcti-mssim.so.0",),
    "libcharon-extra-plugins": (f"{PLUGINS}kernel-libipsec.so",),
    "swtpm": ("swtpm",),
    "swtpm-tools": ("swtpm_setup", "swtpm_localca"),
    "tpm2-tools": ("tpm2_createak", "tpm2_activatecredential", "tpm2_nvread", "tpm2_quote", "tpm2_checkquote",
                   "tpm2_pcrextend"),
    "lego": ("lego",),
    "scep": ("scepclient", "scepserver"),
    "pebble": ("pebble", "pebble-challtestsrv"),
    "golang-cfssl": ("cfssl",),
    "postgresql": ("/usr/lib/postgresql/15/bin/initdb", "/usr/lib/postgresql/15/bin/pg_ctl"),
    "wrk": ("wrk",),
    "apache2-utils": ("ab",),
    "prometheus-alertmanager": ("prometheus-alertmanager", "amtool"),
    "freeradius": ("/usr/sbin/freeradius",),
    "freeradius-utils": ("radclient",),
    "eapoltest": ("eapol_test",),
    "podman": ("podman",),
    "runc": ("runc",),
    "catatonit": ("catatonit",),
    "mmdebstrap": ("mmdebstrap",),
    "nodejs": ("node", "npm"),
}

STRONGSWAN = ("strongswan-charon", "strongswan-swanctl", "libstrongswan-standard-plugins",
              "libstrongswan-extra-plugins", "iproute2", "util-linux")
PKI_TOOL = ("strongswan-pki", "libstrongswan-standard-plugins", "libstrongswan-extra-plugins")
CONTAINERS = ("podman", "runc", "catatonit", "mmdebstrap")

# Which tests need which packages: a path under tests/ (a directory or a file) -> packages.
# Every prefix of a test's path applies, so a file inherits its directory's needs.
NEEDS: dict[str, tuple[str, ...]] = {
    "acme": ("softhsm2", "openssl", "curl"),
    "acme/test_lego.py": ("lego", "pebble"),
    "attestation": ("softhsm2", "openssl", "swtpm", "swtpm-tools"),
    "container": (*CONTAINERS, "lego", "curl", "openssl"),
    "core": ("softhsm2", "openssl"),
    "core/test_issuance.py": PKI_TOOL,
    "device": ("softhsm2", "openssl", "swtpm", "swtpm-tools", "tpm2-tools"),
    "e2e": ("softhsm2", "openssl", "curl", "lego", *STRONGSWAN, *PKI_TOOL),
    "eap": (*STRONGSWAN, "libcharon-extra-plugins", "freeradius", "freeradius-utils", "eapoltest", "openssl"),
    "est": ("softhsm2", "openssl", "curl"),
    "est/test_interop_strongswan.py": PKI_TOOL,
    "gateway/test_interop_strongswan.py": STRONGSWAN,
    "gateway/test_interop_ports_500.py": STRONGSWAN,
    "gateway/test_interop_child_libipsec.py": (*STRONGSWAN, "libcharon-extra-plugins"),
    "gateway/test_pkcs11_key.py": (*STRONGSWAN, "softhsm2", "opensc"),
    "hostile_input": ("softhsm2", "openssl"),
    "ha": ("softhsm2", "openssl", "postgresql", "util-linux"),
    "incident": ("softhsm2", "openssl", "curl", *STRONGSWAN),
    "ocsp": ("softhsm2", "openssl", "curl"),
    "oidc": ("softhsm2", "openssl", "nodejs"),  # + tests/oidc/idp/node_modules (make setup: npm ci)
    "oidc/test_enroll.py": ("curl", "swtpm", "swtpm-tools"),
    "oidc/test_gateway.py": STRONGSWAN,
    "ocsp/test_strongswan.py": STRONGSWAN,
    "posture": ("softhsm2", "openssl", "swtpm", "swtpm-tools", "tpm2-tools"),
    "posture/test_posture_gateway.py": (*STRONGSWAN, "libcharon-extra-plugins", "libtss2-tcti-mssim0", "curl"),
    "response": ("softhsm2", "openssl", "strongswan-charon", "libstrongswan-standard-plugins",
                 "libstrongswan-extra-plugins"),
    "response/test_alertmanager.py": ("prometheus-alertmanager",),
    "scep": ("softhsm2", "openssl", "postgresql", "util-linux"),
    "scep/test_interop.py": (*PKI_TOOL, "scep"),
}

# program (or file) name -> Debian package, for turning "No such file or directory: 'lego'"
# into the same advice.
PROGRAMS: dict[str, str] = {Path(item).name: package for package, items in PACKAGES.items() for item in items}


def _present(item: str) -> bool:
    return Path(item).exists() if item.startswith("/") else shutil.which(item) is not None


def missing_packages(packages: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Package -> the first thing it provides that is absent, for each package not installed."""
    missing: dict[str, str] = {}
    for package in dict.fromkeys(packages):
        absent = next((item for item in PACKAGES[package] if not _present(item)), None)
        if absent is not None:
            missing[package] = absent
    return missing


def needs_of(relative: str) -> tuple[str, ...]:
    """The packages a test file (path relative to tests/) needs, from every prefix in NEEDS."""
    parts = relative.split("/")
    found: list[str] = []
    for i in range(1, len(parts) + 1):
        found += NEEDS.get("/".join(parts[:i]), ())
    return tuple(dict.fromkeys(found))


def advice(missing: dict[str, str]) -> str:
    """One line: which Debian packages to install and what of each is absent."""
    items = ", ".join(f"{package} (no {what})" for package, what in missing.items())
    return f"missing Debian package{'s' if len(missing) > 1 else ''}: {items} - run `make setup` " \
           f"(or apt-get install --no-install-recommends {' '.join(missing)})"


def program_advice(program: str) -> str | None:
    """The one-line advice for a program that could not be executed, when a package provides it."""
    package = PROGRAMS.get(Path(program).name)
    return advice({package: program}) if package else None
