"""A container's environment and downward-API values, by the kubelet's rules.

Order (later wins): the image's ENV, the ``kubernetes`` Service variables, ``envFrom``, ``env``.
``$(VAR)`` in a value or in the command and arguments expands to a variable defined earlier
(``$$(VAR)`` stays literal), as the kubelet does.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

from migrollout import kube
from migrollout.kube import KubeClient, KubeError

_FIELD_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class ConfigError(Exception):
    """The container cannot be configured yet (the kubelet's CreateContainerConfigError)."""


def field_value(pod: dict[str, Any], path: str) -> str:
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    simple = {
        "metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""), "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": status.get("podIP", ""), "status.hostIP": status.get("hostIP", ""),
    }
    if path in simple:
        return str(simple[path])
    if path in ("status.podIPs", "status.hostIPs"):
        return ",".join(item.get("ip", "") for item in status.get(path.split(".")[1]) or [])
    match = _FIELD_SUBSCRIPT.match(path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        values = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{key}="{value}"' for key, value in sorted(values.items()))
    raise ConfigError(f"unsupported fieldPath {path!r}")


def expand(text: str, variables: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return variables[name] if name in variables else match.group(0)

    return _REFERENCE.sub(replace, text)


def _resource_value(container: dict[str, Any], ref: dict[str, Any]) -> str:
    resource = ref.get("resource", "")
    kind, _, name = resource.partition(".")
    value = ((container.get("resources") or {}).get(kind) or {}).get(name)
    if value is None:
        return "0"
    return str(value)


def _read(api: KubeClient, kind: str, namespace: str, name: str) -> dict[str, str] | None:
    path = kube.configmap_path(namespace, name) if kind == "configmap" else \
        f"/api/v1/namespaces/{namespace}/secrets/{name}"
    try:
        found = api.get_or_none(path, what=f"read {kind} {namespace}/{name}")
    except KubeError as exc:
        raise ConfigError(exc.one_line()) from None
    if found is None:
        return None
    if kind == "secret":
        return {key: base64.b64decode(value).decode(errors="replace") for key, value in
                (found.get("data") or {}).items()}
    return dict(found.get("data") or {})


def container_env(api: KubeClient, pod: dict[str, Any], container: dict[str, Any],
                  base: Mapping[str, str]) -> dict[str, str]:
    """The environment of ``container``: ``base`` (image and service variables) then envFrom and env."""
    namespace = pod["metadata"]["namespace"]
    result = dict(base)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, key in (("configmap", "configMapRef"), ("secret", "secretRef")):
            ref = source.get(key)
            if ref is None:
                continue
            data = _read(api, kind, namespace, ref.get("name", ""))
            if data is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind} "{ref.get("name")}" not found')
            result.update({prefix + name: value for name, value in data.items()})
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item or "valueFrom" not in item:
            result[name] = expand(str(item.get("value", "")), result)
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            result[name] = field_value(pod, source["fieldRef"].get("fieldPath", ""))
        elif "resourceFieldRef" in source:
            result[name] = _resource_value(container, source["resourceFieldRef"])
        else:
            kind, ref = ("configmap", source.get("configMapKeyRef")) if "configMapKeyRef" in source else \
                ("secret", source.get("secretKeyRef"))
            if ref is None:
                raise ConfigError(f"env {name}: unsupported valueFrom {sorted(source)}")
            data = _read(api, kind, namespace, ref.get("name", ""))
            if data is None or ref.get("key") not in data:
                if ref.get("optional"):
                    continue
                what = f'{kind} "{ref.get("name")}" not found' if data is None else \
                    f'couldn\'t find key {ref.get("key")} in {kind} {namespace}/{ref.get("name")}'
                raise ConfigError(what)
            result[name] = data[ref["key"]]
    return result


def env_value(pod: dict[str, Any], container: dict[str, Any], name: str) -> str | None:
    """An environment variable of the container from its own ``env`` alone (a literal value, or a pod field
    by the kubelet's rules; "" for a field this simulator does not know), without the API; None when the
    container does not set it. What a simulated node agent reads off its own pod."""
    for item in container.get("env") or []:
        if item.get("name") != name:
            continue
        if "value" in item:
            return str(item["value"])
        path = (item.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
        try:
            return field_value(pod, path or "")
        except ConfigError:
            return ""
    return None


def pod_env(pod: dict[str, Any], name: str) -> str | None:
    """The variable in the pod's first container that sets it."""
    for container in pod.get("spec", {}).get("containers") or []:
        value = env_value(pod, container, name)
        if value is not None:
            return value
    return None
