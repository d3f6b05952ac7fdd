"""Static checks of the Dockerfile (tests/container builds and runs it with podman)."""

from __future__ import annotations

import re
import shlex

from render import CHART_DIR, REPO_ROOT, load_values_file

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()
DOCKERIGNORE = (REPO_ROOT / ".dockerignore").read_text().split()


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for op, rest in _instructions():
        if op == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((op, rest))
    return stages


def test_multi_stage_on_python_311_slim_bookworm() -> None:
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in DOCKERFILE
    froms = [rest for op, rest in _instructions() if op == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]


def test_runtime_stage_packages_user_and_entrypoint() -> None:
    runtime = _stages()[-1]
    runs = " ".join(rest for op, rest in runtime if op == "RUN")
    for package in ("softhsm2", "libtss2-esys-3.0.2-0", "libtss2-fapi1", "libtss2-tctildr0", "libtss2-mu0",
                    "libtss2-rc0", "libtss2-sys1"):
        assert f" {package} " in f" {runs} ", package
    assert "build-essential" not in runs and "libtss2-dev" not in runs, "no compilers in the runtime image"
    assert "install --no-index --find-links=/wheels ikepki" in runs
    assert ("USER", "10001:10001") in runtime
    assert "--uid \"${IKEPKI_UID}\"" in runs and "ARG IKEPKI_UID=10001" in DOCKERFILE
    assert ("ENTRYPOINT", '["ikepki"]') in runtime
    env = " ".join(rest for op, rest in runtime if op == "ENV")
    assert "IKEPKI_DIR=/var/lib/ikepki" in env and "PYTHONDONTWRITEBYTECODE=1" in env
    assert ("VOLUME", '["/var/lib/ikepki"]') in runtime


def test_image_defaults_match_the_chart() -> None:
    env = " ".join(rest for op, rest in _instructions() if op == "ENV")
    module = load_values_file("values.yaml")["hsm"]["modulePath"]
    assert f"IKEPKI_HSM_MODULE={module}" in env
    assert module == "/usr/lib/softhsm/libsofthsm2.so"
    assert (CHART_DIR / "values.yaml").exists()


def test_copied_sources_exist_and_are_not_ignored() -> None:
    for op, rest in _instructions():
        if op != "COPY" or rest.startswith("--from"):
            continue
        *sources, _dest = shlex.split(rest)
        for source in sources:
            if "*" in source:
                continue
            assert (REPO_ROOT / source).exists(), source
            assert source not in DOCKERIGNORE, source


def test_dockerignore_keeps_state_and_secrets_out() -> None:
    for pattern in (".git", ".venv", "var", "**/hsm-pin", "**/admin-token", "**/*.key", "**/tokens", ".env"):
        assert pattern in DOCKERIGNORE, pattern
