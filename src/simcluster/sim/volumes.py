"""A real pod's volumes, materialised on its simulated node as the kubelet would.

Each volume becomes a directory (or file) under the pod's directory, bound into the
containers that mount it: hostPath from the node's own host filesystem (a directory per node
the simulator owns, see ``node_os``), emptyDir, configMap, secret, downwardAPI and projected
volumes (service-account tokens from the TokenRequest API, bound to the pod). A pod that
mounts no token at /var/run/secrets/kubernetes.io/serviceaccount gets one, as the
ServiceAccount admission plugin would add it (the API server here runs without it), unless
``automountServiceAccountToken`` is false.

Files are replaced atomically (write, then rename) so a running container sees either the
old or the new content; tokens are renewed at 80 % of their life and ConfigMap and Secret
contents follow their objects, as the kubelet's periodic sync does.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrollout.kube import KubeClient, KubeError
from simcluster.sim.pod_env import ConfigError, field_value

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_TOKEN_SECONDS = 3607  # the kubelet's default for the service-account volume it projects
AUTO_VOLUME = "kube-api-access-simcluster"


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    readonly: bool = True


def _write(path: Path, data: bytes, mode: int) -> bool:
    """Replace ``path`` atomically when its content or mode differs; True when it changed."""
    try:
        if path.read_bytes() == data and stat.S_IMODE(path.stat().st_mode) == mode:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_bytes(data)
    staging.chmod(mode)
    os.replace(staging, path)
    return True


def _items(data: dict[str, bytes], items: list[dict[str, Any]] | None, default_mode: int) -> dict[str, tuple[bytes, int]]:
    if not items:
        return {key: (value, default_mode) for key, value in data.items()}
    result = {}
    for item in items:
        if item["key"] in data:
            result[item.get("path", item["key"])] = (data[item["key"]], int(item.get("mode", default_mode)))
    return result


@dataclass
class PodVolumes:
    api: KubeClient
    pod: dict[str, Any]
    directory: Path                       # the pod's volumes directory
    host_root: Callable[[], Path]         # the node's host filesystem
    tokens: dict[str, tuple[bytes, float]] = field(default_factory=dict)  # volume/path -> token, renew at
    paths: dict[str, Path] = field(default_factory=dict)  # volume name -> its directory or file

    @property
    def namespace(self) -> str:
        return self.pod["metadata"]["namespace"]

    def volumes(self) -> list[dict[str, Any]]:
        spec = self.pod.get("spec") or {}
        volumes = list(spec.get("volumes") or [])
        if self._needs_service_account_volume():
            volumes.append({"name": AUTO_VOLUME, "projected": {"defaultMode": 0o644, "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": DEFAULT_TOKEN_SECONDS}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                                            "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            ]}})
        return volumes

    def _needs_service_account_volume(self) -> bool:
        spec = self.pod.get("spec") or {}
        if spec.get("automountServiceAccountToken") is False:
            return False
        containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
        return not any(mount.get("mountPath", "").rstrip("/") == SERVICE_ACCOUNT_DIR
                       for container in containers for mount in container.get("volumeMounts") or [])

    # -- materialising --------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Write every volume (raises ConfigError while one cannot be, e.g. a missing ConfigMap)."""
        for volume in self.volumes():
            self.paths[volume["name"]] = self._volume(volume)

    def refresh(self) -> None:
        """Renew tokens due for it and follow ConfigMaps and Secrets (errors leave the old content)."""
        for volume in self.volumes():
            if any(key in volume for key in ("configMap", "secret", "projected", "downwardAPI")):
                with contextlib.suppress(ConfigError):
                    self._volume(volume)

    def _volume(self, volume: dict[str, Any]) -> Path:
        name = volume["name"]
        if "hostPath" in volume:
            return self._host_path(name, volume["hostPath"])
        if "emptyDir" in volume:
            path = self.directory / "empty-dir" / name
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)
            return path
        path = self.directory / "files" / name
        if "configMap" in volume:
            files = self._object_files("configmap", volume["configMap"])
        elif "secret" in volume:
            source = dict(volume["secret"], name=volume["secret"].get("secretName", ""))
            files = self._object_files("secret", source)
        elif "downwardAPI" in volume:
            files = self._downward(volume["downwardAPI"], int(volume["downwardAPI"].get("defaultMode", 0o644)))
        elif "projected" in volume:
            files = self._projected(name, volume["projected"])
        else:
            kinds = sorted(key for key in volume if key != "name")
            raise ConfigError(f"volume {name}: {', '.join(kinds)} volumes are not supported by simcluster")
        path.mkdir(parents=True, exist_ok=True)
        for relative, (data, mode) in files.items():
            _write(path / relative, data, mode)
        for existing in list(path.rglob("*")):
            if existing.is_file() and str(existing.relative_to(path)) not in files \
                    and not existing.name.startswith("."):
                existing.unlink()
        return path

    def _host_path(self, name: str, source: dict[str, Any]) -> Path:
        host = self.host_root()
        relative = str(source.get("path", "/")).lstrip("/")
        path = host / relative if relative else host
        kind = source.get("type", "")
        if kind == "DirectoryOrCreate" or (kind == "" and not path.exists()):
            path.mkdir(parents=True, exist_ok=True)
        elif kind == "FileOrCreate" and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        elif kind == "Directory" and not path.is_dir():
            raise ConfigError(f"volume {name}: hostPath type check failed: {source.get('path')} is not a directory")
        elif kind == "File" and not path.is_file():
            raise ConfigError(f"volume {name}: hostPath type check failed: {source.get('path')} is not a file")
        elif kind in ("Socket", "CharDevice", "BlockDevice"):
            raise ConfigError(f"volume {name}: hostPath type check failed: {source.get('path')} is not a "
                              f"{kind} on a simulated node")
        return path

    def _object(self, kind: str, name: str) -> dict[str, bytes] | None:
        path = f"/api/v1/namespaces/{self.namespace}/{'configmaps' if kind == 'configmap' else 'secrets'}/{name}"
        try:
            found = self.api.get_or_none(path, what=f"read {kind} {self.namespace}/{name}")
        except KubeError as exc:
            raise ConfigError(exc.one_line()) from None
        if found is None:
            return None
        if kind == "secret":
            return {key: base64.b64decode(value) for key, value in (found.get("data") or {}).items()}
        data = {key: value.encode() for key, value in (found.get("data") or {}).items()}
        data.update({key: base64.b64decode(value) for key, value in (found.get("binaryData") or {}).items()})
        return data

    def _object_files(self, kind: str, source: dict[str, Any], default_mode: int | None = None
                      ) -> dict[str, tuple[bytes, int]]:
        mode = int(source.get("defaultMode", default_mode if default_mode is not None else 0o644))
        data = self._object(kind, source.get("name", ""))
        if data is None:
            if source.get("optional"):
                return {}
            raise ConfigError(f'{kind} "{source.get("name")}" not found')
        return _items(data, source.get("items"), mode)

    def _downward(self, source: dict[str, Any], default_mode: int) -> dict[str, tuple[bytes, int]]:
        files = {}
        for item in source.get("items") or []:
            if "fieldRef" not in item:
                raise ConfigError(f"downwardAPI item {item.get('path')}: only fieldRef is supported by simcluster")
            files[item["path"]] = (field_value(self.pod, item["fieldRef"].get("fieldPath", "")).encode(),
                                   int(item.get("mode", default_mode)))
        return files

    def _projected(self, volume: str, projected: dict[str, Any]) -> dict[str, tuple[bytes, int]]:
        mode = int(projected.get("defaultMode", 0o644))
        files: dict[str, tuple[bytes, int]] = {}
        for source in projected.get("sources") or []:
            if "serviceAccountToken" in source:
                token = source["serviceAccountToken"]
                files[token["path"]] = (self._token(f"{volume}/{token['path']}", token), mode)
            elif "configMap" in source:
                files.update(self._object_files("configmap", source["configMap"], mode))
            elif "secret" in source:
                files.update(self._object_files("secret", source["secret"], mode))
            elif "downwardAPI" in source:
                files.update(self._downward(source["downwardAPI"], mode))
            else:
                raise ConfigError(f"projected source {sorted(source)} is not supported by simcluster")
        return files

    def _token(self, key: str, source: dict[str, Any]) -> bytes:
        cached = self.tokens.get(key)
        if cached is not None and time.time() < cached[1]:
            return cached[0]
        meta, spec = self.pod["metadata"], self.pod.get("spec") or {}
        named = spec.get("serviceAccountName") or spec.get("serviceAccount")
        account = named or "default"
        seconds = int(source.get("expirationSeconds", DEFAULT_TOKEN_SECONDS))
        body: dict[str, Any] = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                "spec": {"expirationSeconds": seconds}}
        if named:
            # Bound to the pod: the API server rejects it once the pod is gone. A pod that names no account
            # (the ServiceAccount admission plugin, which would name "default", is off here) cannot be bound
            # to "default"; it gets an unbound token of the same lifetime.
            body["spec"]["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", "name": meta["name"],
                                              "uid": meta["uid"]}
        if source.get("audience"):
            body["spec"]["audiences"] = [source["audience"]]
        try:
            answer = self.api.create(f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{account}/token", body,
                                     what=f"request a token for service account {self.namespace}/{account}")
        except KubeError as exc:
            raise ConfigError(exc.one_line()) from None
        token = answer["status"]["token"].encode()
        # The kubelet renews a projected token once 80 % of its life has passed.
        self.tokens[key] = (token, time.time() + 0.8 * seconds)
        return token

    # -- mounting -------------------------------------------------------------------------------------------

    def mounts(self, container: dict[str, Any]) -> list[Mount]:
        result = []
        for mount in container.get("volumeMounts") or []:
            source = self.paths.get(mount["name"])
            if source is None:
                raise ConfigError(f"volumeMount {mount['name']}: no such volume in the pod")
            sub_path = mount.get("subPath")
            if sub_path:
                source = source / sub_path
                if not source.exists():
                    source.mkdir(parents=True, exist_ok=True)
            result.append(Mount(str(source), mount["mountPath"], bool(mount.get("readOnly"))))
        if AUTO_VOLUME in self.paths:
            result.append(Mount(str(self.paths[AUTO_VOLUME]), SERVICE_ACCOUNT_DIR, True))
        return result

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
