"""The chart serves /console behind the enroll ingress only when asked (rendered with Helm's own engine)."""

from __future__ import annotations

import yaml
from render import render_templates


def _paths(overrides: dict[str, object]) -> dict[str, str]:
    out = render_templates(overrides=overrides)
    ingress = next(v for k, v in out.items() if k.endswith("templates/ingress.yaml"))
    paths: dict[str, str] = {}
    for doc in yaml.safe_load_all(ingress):
        if doc and doc.get("kind") == "Ingress" and doc["metadata"]["name"].endswith("enroll"):
            for rule in doc["spec"]["rules"]:
                for p in rule["http"]["paths"]:
                    paths[p["path"]] = f"{p['backend']['service']['name']}:{p['backend']['service']['port']['name']}"
    return paths


def test_console_path_on_the_enroll_ingress_only_when_enabled() -> None:
    off = _paths({"ingress": {"enabled": True}})
    assert "/acme" in off and "/console" not in off
    on = _paths({"ingress": {"enabled": True, "console": {"enabled": True}}})
    assert on["/console"] == on["/acme"] and on["/console"].endswith(":https")
