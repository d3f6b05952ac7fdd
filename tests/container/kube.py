"""Run the pods of rendered chart manifests with podman, honouring what a kubelet would for
these workloads: init containers in order, then the main container; command/args/env with
Kubernetes `$(VAR)` expansion and Secret `secretKeyRef`s; securityContext (runAsUser/Group,
runAsNonRoot, readOnlyRootFilesystem, capabilities, allowPrivilegeEscalation); volumes
(PVC -> a podman volume per claim, emptyDir -> tmpfs with its sizeLimit, Secret/ConfigMap/
projected -> read-only files); Services -> host names of the selected pods' addresses
(`--add-host`); readiness probes (httpGet on the pod address, exec through `podman exec`);
terminationGracePeriodSeconds on stop.

What podman does not do like a kubelet (listed in charts/ikepki/README.md): fsGroup is
emulated with podman's `:U` volume option (the volume is chowned to runAsUser:runAsGroup, not
made group-owned by fsGroup); seccomp RuntimeDefault is podman's default profile; resources,
affinity, PDBs, HPAs, NetworkPolicies, Ingresses and ServiceAccounts are not applied."""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.container.podman import Ledger, inspect, logs, podman
from tests.helm.render import _expand, pod_spec


def _secret_data(obj: Mapping[str, Any]) -> dict[str, str]:
    data = {k: str(v) for k, v in (obj.get("stringData") or {}).items()}
    data.update({k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()})
    return data


@dataclass
class Cluster:
    """The rendered objects, and the podman state made for them."""

    manifests: list[dict[str, Any]]
    led: Ledger
    files: Path
    hosts: dict[str, str] = field(default_factory=dict)  # Service name -> address
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)  # container name -> additions

    def obj(self, kind: str, name: str) -> dict[str, Any]:
        found = [m for m in self.manifests if m["kind"] == kind and m["metadata"]["name"] == name]
        assert len(found) == 1, (kind, name)
        return found[0]

    def secret(self, name: str) -> dict[str, str]:
        return _secret_data(self.obj("Secret", name))

    def claim_volume(self, claim: str, template: bool = False) -> str:
        if not template:
            self.obj("PersistentVolumeClaim", claim)  # the chart renders the claim
        name = self.led.name(claim)
        if name not in self.led.volumes:
            podman("volume", "create", name)
            self.led.volumes.append(name)
        return name

    # -- one container ----------------------------------------------------------------------
    def _env(self, container: Mapping[str, Any], extra: Mapping[str, str]) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in container.get("env") or []:
            if "valueFrom" in item:
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = self.secret(ref["name"])[ref["key"]]
            else:
                env[item["name"]] = _expand(str(item.get("value", "")), env)
        env.update(extra)
        return env

    def _volume_args(self, pod: Mapping[str, Any], container: Mapping[str, Any], key: str) -> list[str]:
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        fs_group = (pod.get("securityContext") or {}).get("fsGroup")
        args: list[str] = []
        for mount in container.get("volumeMounts") or []:
            vol, path, ro = volumes[mount["name"]], mount["mountPath"], bool(mount.get("readOnly"))
            if "emptyDir" in vol:
                size = (vol["emptyDir"] or {}).get("sizeLimit", "256Mi").replace("Mi", "m").replace("Gi", "g")
                # podman copies the image directory's mode (not its owner) onto a tmpfs mounted
                # over it; ``U`` (chown to the container user) stands in for fsGroup
                owner = ",U" if fs_group is not None else ""
                args += ["--tmpfs", f"{path}:rw,nosuid,nodev,mode=1777,size={size}{owner}"]
            elif "persistentVolumeClaim" in vol:
                name = self.claim_volume(vol["persistentVolumeClaim"]["claimName"], vol.get("template", False))
                opts = ["ro" if ro else "rw"] + (["U"] if fs_group is not None and not ro else [])
                args += ["-v", f"{name}:{path}:{','.join(opts)}"]
            else:
                files = self._files(vol, f"{key}-{mount['name']}", fs_group)
                args += ["-v", f"{files}:{path}:ro"]
        return args

    def _files(self, vol: Mapping[str, Any], key: str, fs_group: int | None) -> Path:
        """Secret / ConfigMap / projected volume contents as files (mode defaultMode, group fsGroup
        with group read, as the kubelet does)."""
        import os

        target = self.files / key
        target.mkdir(parents=True, exist_ok=True)
        sources: list[tuple[str, Mapping[str, Any]]] = []
        if "secret" in vol:
            sources.append(("Secret", vol["secret"]))
        elif "configMap" in vol:
            sources.append(("ConfigMap", vol["configMap"]))
        elif "projected" in vol:
            for src in vol["projected"]["sources"]:
                kind = "Secret" if "secret" in src else "ConfigMap"
                sources.append((kind, src["secret" if kind == "Secret" else "configMap"]))
        else:
            raise AssertionError(f"volume type not handled: {vol}")
        for kind, src in sources:
            name = src.get("secretName") or src["name"]
            obj = self.obj(kind, name)
            data = _secret_data(obj) if kind == "Secret" else {k: str(v) for k, v in (obj.get("data") or {}).items()}
            items = src.get("items") or [{"key": k, "path": k} for k in data]
            mode = int(src.get("defaultMode", vol.get("secret", {}).get("defaultMode", 0o644)))
            for item in items:
                path = target / item["path"]
                path.write_text(data[item["key"]])
                if fs_group is not None:
                    os.chown(path, 0, fs_group)
                    mode |= 0o040 if mode & 0o400 else 0
                path.chmod(mode)
        target.chmod(0o755)
        return target

    def _security_args(self, pod: Mapping[str, Any], container: Mapping[str, Any]) -> list[str]:
        sc = {**(pod.get("securityContext") or {}), **(container.get("securityContext") or {})}
        args = ["--user", f"{sc['runAsUser']}:{sc.get('runAsGroup', sc['runAsUser'])}"]
        if sc.get("runAsNonRoot"):
            assert int(sc["runAsUser"]) != 0, "runAsNonRoot with uid 0"
        if sc.get("readOnlyRootFilesystem"):
            args += ["--read-only", "--read-only-tmpfs=false"]
        caps = sc.get("capabilities") or {}
        args += [arg for cap in caps.get("drop") or [] for arg in ("--cap-drop", cap)]
        args += [arg for cap in caps.get("add") or [] for arg in ("--cap-add", cap)]
        if sc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        assert not sc.get("privileged"), "privileged containers are not run"
        if pod.get("automountServiceAccountToken") is not False:
            raise AssertionError("a service-account token would be mounted")
        return args

    def run_container(self, pod: Mapping[str, Any], container: Mapping[str, Any], name: str, *,
                      detach: bool, publish: list[str] | None = None) -> str:
        env = self._env(container, self.extra_env.get(container["name"], {}))
        command = [_expand(c, env) for c in container.get("command") or []]
        args = [_expand(a, env) for a in container.get("args") or []]
        options = [*self._security_args(pod, container), *self._volume_args(pod, container, name)]
        options += [arg for host, ip in self.hosts.items() for arg in ("--add-host", f"{host}:{ip}")]
        options += [arg for k, v in env.items() for arg in ("-e", f"{k}={v}")]
        options += [arg for spec in publish or [] for arg in ("-p", spec)]
        if command:
            import json

            options += ["--entrypoint", json.dumps(command)]
        full = self.led.name(name)
        self.led.containers.append(full)
        mode = ["-d"] if detach else []
        out = podman("run", *mode, "--name", full, *options, container["image"], *args, timeout=600)
        if not detach:
            return out
        return full

    # -- one pod ----------------------------------------------------------------------------
    def start_pod(self, kind: str, workload: str, replica: str, publish: tuple[str, ...] = ()) -> Pod:
        """Init containers to completion (a failing one is retried, as the kubelet restarts it),
        then the first main container, detached; ``publish`` names ports to expose on loopback
        (the TLS certificate names 127.0.0.1, not the pod address)."""
        obj = self.obj(kind, workload)
        spec = dict(pod_spec(obj))
        # a StatefulSet's volumeClaimTemplates: claim "<template>-<set>-0"
        spec["volumes"] = [*(spec.get("volumes") or []), *[
            {"name": t["metadata"]["name"], "template": True,
             "persistentVolumeClaim": {"claimName": f"{t['metadata']['name']}-{workload}-0"}}
            for t in obj["spec"].get("volumeClaimTemplates") or []]]
        for init in spec.get("initContainers") or []:
            for attempt in range(30):
                name = f"{replica}-{init['name']}-{attempt}"
                try:
                    self.run_container(spec, init, name, detach=False)
                    podman("rm", "-f", self.led.name(name), check=False)
                    break
                except AssertionError:
                    if attempt == 29:
                        raise
                    time.sleep(2)
        main = spec["containers"][0]
        ports = [f"127.0.0.1::{p['containerPort']}" for p in main.get("ports") or [] if p.get("name") in publish]
        name = self.run_container(spec, main, f"{replica}-{main['name']}", detach=True, publish=ports)
        return Pod(self, name, spec, main)


@dataclass
class Pod:
    cluster: Cluster
    name: str
    spec: dict[str, Any]
    container: dict[str, Any]

    @property
    def ip(self) -> str:
        networks = inspect(self.name)["NetworkSettings"]
        return str(networks.get("IPAddress") or next(iter(networks["Networks"].values()))["IPAddress"])

    def port(self, name: str) -> int:
        return int(next(p["containerPort"] for p in self.container.get("ports") or [] if p.get("name") == name))

    def url(self, port: str, scheme: str = "http") -> str:
        return f"{scheme}://{self.ip}:{self.port(port)}"

    def loopback(self, port: str, scheme: str = "https") -> str:
        """The URL of a published port on the host's loopback."""
        from tests.container.podman import host_port

        return f"{scheme}://127.0.0.1:{host_port(self.name, f'{self.port(port)}/tcp')}"

    def running(self) -> bool:
        return bool(inspect(self.name)["State"].get("Running"))

    def wait_ready(self, timeout: float = 180) -> None:
        """The readiness probe as rendered, until it passes."""
        probe = self.container["readinessProbe"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise AssertionError(f"{self.name} exited:\n{logs(self.name)[-4000:]}")
            if "httpGet" in probe:
                get = probe["httpGet"]
                port = get["port"] if isinstance(get["port"], int) else self.port(get["port"])
                try:
                    if httpx.get(f"http://{self.ip}:{port}{get['path']}", timeout=3).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            else:
                if _exec_ok(self.name, probe["exec"]["command"]):
                    return
            time.sleep(1)
        raise AssertionError(f"{self.name} not ready:\n{logs(self.name)[-4000:]}")

    def stop(self) -> float:
        """SIGTERM with the pod's terminationGracePeriodSeconds; returns the seconds it took."""
        grace = int(self.spec.get("terminationGracePeriodSeconds", 30))
        started = time.monotonic()
        podman("stop", "-t", str(grace), self.name, timeout=grace + 60)
        return time.monotonic() - started

    def exec(self, *args: str) -> str:
        return podman("exec", self.name, *args, timeout=300)


def _exec_ok(name: str, cmd: list[str]) -> bool:
    import subprocess

    return subprocess.run(["podman", "exec", name, *cmd], capture_output=True, timeout=30,
                          check=False).returncode == 0
