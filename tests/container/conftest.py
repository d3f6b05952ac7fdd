"""Container tests: the images are built by `make image` (content-cached: a repeat run costs
seconds) and run with podman.

A cold build takes minutes (≈ 11 min on a fresh 2-core machine: the Debian base, wheels,
PostgreSQL), so when these tests are collected the build starts in the background as soon as
collection ends and the tests themselves run last: the build overlaps the rest of the suite
instead of adding to it."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.container.podman import REPO

HERE = Path(__file__).resolve().parent
_build: subprocess.Popen[str] | None = None


def _ours(item: pytest.Item) -> bool:
    return HERE in item.path.resolve().parents


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_ours)  # stable: everything else first, in its order


def _start_build() -> None:
    """Both images in one background job (`make image`, then the tests' PostgreSQL image)."""
    global _build
    if _build is None:
        _build = subprocess.Popen(["bash", "-c", "make -s --no-print-directory image && container/build-image.sh "
                                   "--postgres"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, start_new_session=True)


def pytest_collection_finish(session: pytest.Session) -> None:
    if not session.config.option.collectonly and any(_ours(item) for item in session.items):
        _start_build()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _build is not None and _build.poll() is None:
        os.killpg(_build.pid, signal.SIGTERM)
        _build.wait(30)


@pytest.fixture(scope="session")
def built_images() -> tuple[str, str]:
    """(ikepki image, PostgreSQL image): waits for the background build (or runs it)."""
    _start_build()
    assert _build is not None
    try:
        out, err = _build.communicate(timeout=1400)
    except BaseException:
        os.killpg(_build.pid, signal.SIGTERM)
        raise
    if _build.returncode != 0:
        raise AssertionError(f"make image failed ({_build.returncode}):\n{out[-3000:]}\n{err[-5000:]}")
    refs = [line for line in out.splitlines() if line.startswith("localhost/")]
    assert len(refs) == 2, out
    return refs[0], refs[1]


@pytest.fixture(scope="session")
def image(built_images: tuple[str, str]) -> str:
    return built_images[0]


@pytest.fixture(scope="session")
def postgres_image(built_images: tuple[str, str]) -> str:
    return built_images[1]
