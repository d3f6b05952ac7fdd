"""Architecture: packages meet the core through the narrow Protocols of ``ca/ports.py``, never an
untyped deployment (issue 20, item 4).

A parameter named ``dep`` or ``deployment`` (or one whose name ends in ``_dep``/``_deployment``)
must be annotated, and not with ``Any`` or ``object`` (bare, ``typing.Any``, quoted, or inside
``X | None``/``Optional``/``Union``): mypy checks nothing
through ``Any``, so what a package uses of the core would again be unwritten. Read from the
source with :mod:`ast`, so it holds for modules that are never imported by a test too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("ca", "enrollment", "ocsp", "gateway", "response", "console")


def _is_deployment_name(name: str) -> bool:
    return name in ("dep", "deployment") or name.endswith(("_dep", "_deployment"))


UNTYPED = {"Any", "object"}  # mypy checks nothing one uses of either


def _is_any(annotation: ast.expr) -> bool:
    """``Any`` or ``object``, also quoted, inside ``X | None`` / ``Optional[X]`` / ``Union[X, …]``."""
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):  # "Any"
        try:
            annotation = ast.parse(annotation.value, mode="eval").body
        except SyntaxError:
            return False
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        return _is_any(annotation.left) or _is_any(annotation.right)
    if isinstance(annotation, ast.Subscript) and _name(annotation.value) in {"Optional", "Union"}:
        inner = annotation.slice
        return any(_is_any(e) for e in (inner.elts if isinstance(inner, ast.Tuple) else [inner]))
    return _name(annotation) in UNTYPED


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else None


def untyped_deployments(source: str, filename: str) -> list[str]:
    """``file:line name`` of every deployment parameter without a Protocol annotation."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        a = node.args
        for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, *([a.vararg] if a.vararg else []),
                    *([a.kwarg] if a.kwarg else [])]:
            if not _is_deployment_name(arg.arg) or isinstance(node, ast.Lambda):
                continue
            if arg.annotation is None or _is_any(arg.annotation):
                found.append(f"{filename}:{arg.lineno} {arg.arg}")
    return found


def test_no_package_takes_an_untyped_deployment() -> None:
    offenders = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            offenders += untyped_deployments(path.read_text(), str(path.relative_to(REPO)))
    assert offenders == [], "type these with a Protocol from ca/ports.py:\n" + "\n".join(offenders)


@pytest.mark.parametrize("source", [
    "def f(dep: Any) -> None: ...",
    "def f(deployment: typing.Any) -> None: ...",
    "def f(deployment: 'Any') -> None: ...",
    "class C:\n    def __init__(self, dep) -> None: ...",
    "async def f(*, ocsp_deployment: Any) -> None: ...",
    "def f(dep: Any | None = None) -> None: ...",
    "def f(dep: 'None | Any') -> None: ...",
    "def f(dep: Optional[Any]) -> None: ...",
    "def f(dep: typing.Union[int, Any]) -> None: ...",
    "def f(dep: object) -> None: ...",
])
def test_the_check_finds_each_form(source: str) -> None:
    assert len(untyped_deployments(source, "x.py")) == 1


@pytest.mark.parametrize("source", [
    "def f(dep: CoreServices) -> None: ...",
    "def f(deployment: 'ServiceKeys') -> None: ...",
    "def f(depth: Any, deploy: int) -> None: ...",
    "def f(dep: CoreServices | None = None) -> None: ...",
    "def f(dep: Optional[ServiceKeys]) -> None: ...",
])
def test_the_check_passes_typed_parameters(source: str) -> None:
    assert untyped_deployments(source, "x.py") == []
