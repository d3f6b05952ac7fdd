"""tests/system_deps.py: the package map is true on this machine, `make setup` installs every
package in it, and a missing component fails a test with one line naming its Debian package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import system_deps

REPO = Path(__file__).resolve().parents[1]
ESSENTIAL = {"util-linux"}  # Essential: yes, on every Debian system


def _apt_packages() -> set[str]:
    out = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(REPO), "--eval",
                          "__print_apt: ; @echo $(APT_PACKAGES)", "__print_apt"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def _depends(packages: list[str]) -> dict[str, set[str]]:
    """Package -> its direct Depends (one apt-cache call: it is slow to start)."""
    out = subprocess.run(["apt-cache", "depends", "--no-recommends", "--no-suggests", *packages],
                         capture_output=True, text=True, check=False).stdout
    deps: dict[str, set[str]] = {}
    current = ""
    for line in out.splitlines():
        if not line.startswith(" "):
            current = line.strip()
            deps.setdefault(current, set())
        elif line.strip().startswith("Depends:"):
            deps[current].add(line.split(":", 1)[1].strip())
    return deps


def test_make_setup_installs_every_package_the_tests_need() -> None:
    needed = {p for packages in system_deps.NEEDS.values() for p in packages} | set(system_deps.PACKAGES)
    assert needed - ESSENTIAL <= _apt_packages(), needed - ESSENTIAL - _apt_packages()


def test_every_listed_file_belongs_to_its_package() -> None:
    """dpkg agrees: each program/file in PACKAGES is shipped by the package it is listed under
    or by one of its direct dependencies (libsofthsm2 for softhsm2, postgresql-15 for postgresql)."""
    candidates: dict[str, tuple[str, str]] = {}
    for package, items in system_deps.PACKAGES.items():
        for item in items:
            path = item if item.startswith("/") else shutil.which(item)
            assert path, f"{item} ({package}) is not installed here"
            real = os.path.realpath(path)  # merged /usr: dpkg may know /sbin/ip for /usr/sbin/ip
            for candidate in {path, real, real.removeprefix("/usr"), path.removeprefix("/usr")}:
                candidates[candidate] = (package, item)
    out = subprocess.run(["dpkg-query", "-S", *candidates], capture_output=True, text=True, check=False).stdout
    owners: dict[str, set[str]] = {}
    for line in out.splitlines():
        names, _, path = line.partition(": ")
        if path in candidates:
            # multiarch library packages are reported as name:arch
            owners.setdefault(candidates[path][1], set()).update(n.strip().split(":")[0] for n in names.split(","))
    depends = _depends(list(system_deps.PACKAGES))
    for package, items in system_deps.PACKAGES.items():
        allowed = {package} | depends.get(package, set())
        for item in items:
            assert owners.get(item, set()) & allowed, (item, package, owners.get(item))


def test_needs_of_inherits_directory_needs() -> None:
    needs = system_deps.needs_of("gateway/test_interop_child_libipsec.py")
    assert "libstrongswan-standard-plugins" in needs and "libcharon-extra-plugins" in needs
    assert system_deps.needs_of("helm/test_helm_render.py") == ()
    assert set(system_deps.needs_of("scep/test_interop.py")) >= {"postgresql", "scep", "strongswan-pki"}


def test_missing_component_fails_with_one_line(tmp_path: Path) -> None:
    """Through real pytest runs: a test whose NEEDS are absent, and a harness that execs a
    program which is not installed, each fail with one line naming the Debian package."""
    (tmp_path / "conftest.py").write_text(
        "from pathlib import Path\n"
        "import tests.conftest as root\n"
        "from tests import system_deps\n"
        "from tests.conftest import pytest_runtest_makereport, pytest_runtest_setup  # noqa: F401\n"
        "root.TESTS = Path(__file__).parent\n"
        "system_deps.NEEDS['test_needs.py'] = ('lego', 'libstrongswan-standard-plugins')\n"
        "system_deps.PACKAGES['libstrongswan-standard-plugins'] = ('/nonexistent/libstrongswan-openssl.so',)\n")
    (tmp_path / "test_needs.py").write_text("def test_x():\n    raise AssertionError('fixture ran')\n")
    (tmp_path / "test_exec.py").write_text(
        "import subprocess\n"
        "def helper():\n    return subprocess.run(['pebble-challtestsrv', '-h'], check=True)\n"
        "def test_y():\n    helper()\n")
    # CI=1 makes pytest print the short summary untruncated, which would repeat each line: the
    # summary is switched off (-rN) and the CI variables dropped, so the count is the same anywhere
    env = {k: v for k, v in os.environ.items() if k not in {"CI", "BUILD_NUMBER", "COLUMNS"}}
    env |= {"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rN", "-p", "no:cacheprovider", "-p", "no:randomly",
                           "--rootdir", str(tmp_path), "-c", "/dev/null", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "fixture ran" not in out and "Traceback" not in out, out
    needs = [line for line in out.splitlines() if "missing Debian packages: lego (no lego), " in line]
    assert len(needs) == 1 and "libstrongswan-standard-plugins (no /nonexistent/libstrongswan-openssl.so)" \
        in needs[0], out
    execs = [line for line in out.splitlines() if "test_exec.py::test_y: missing Debian package: pebble" in line]
    assert len(execs) == 1, out
    assert "def helper" not in out, out  # no stack trace of the harness


@pytest.mark.parametrize("program", ["lego", "/usr/lib/ipsec/charon", "swanctl"])
def test_program_advice_names_the_package(program: str) -> None:
    line = system_deps.program_advice(program)
    assert line is not None and system_deps.PROGRAMS[Path(program).name] in line
    assert system_deps.program_advice("no-such-program-xyz") is None
