"""helm_release: install, upgrade or uninstall one Helm release, reporting a change only when there is one."""

from __future__ import annotations

import json
from typing import Any

import yaml

from migrollout.ansible_glue import TaskContext, TaskFailed, TaskSpec
from migrollout.helm import Helm, HelmError

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "name": {"type": "str", "required": True},
    "namespace": {"type": "str", "required": True},
    "chart": {"type": "str"},
    "chart_version": {"type": "raw"},
    "repo_url": {"type": "str"},
    "values": {"type": "dict", "default": {}},
    "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
    "wait": {"type": "bool", "default": False},
    "timeout": {"type": "int", "default": 600},
    "helm_binary": {"type": "str", "default": "helm"},
    "kubeconfig": {"type": "path"},
    "context": {"type": "str"},
}


def _normalized(values: Any) -> Any:
    return json.loads(json.dumps(values, sort_keys=True, default=str))


def _yaml(values: dict[str, Any]) -> str:
    return yaml.safe_dump(values, sort_keys=True, default_flow_style=False) if values else ""


def run(ctx: TaskContext) -> dict[str, Any]:
    params = ctx.params
    release, namespace = params["name"], params["namespace"]
    version = params.get("chart_version")
    if version is not None and not isinstance(version, str):
        raise TaskFailed(f"chart_version must be a string such as 'v26.7.0', not {type(version).__name__} {version!r}"
                         f" (quote it in YAML: 26.10 would be read as the number 26.1)")
    if params["state"] == "present" and not params.get("chart"):
        raise TaskFailed("chart is required with state=present")
    try:
        helm = Helm(params["helm_binary"], params.get("kubeconfig"), params.get("context"), params["timeout"])
        current = helm.deployed(release, namespace)
        result: dict[str, Any] = {"name": release, "namespace": namespace, "changed": False}
        if params["state"] == "absent":
            result["changed"] = current is not None
            if current is not None and not ctx.check_mode:
                helm.uninstall(release, namespace)
            if ctx.diff and current is not None:
                result["diff"] = {"before": _yaml(current.values), "after": "",
                                  "before_header": f"release {namespace}/{release}", "after_header": "(absent)"}
            return result

        wanted_chart = helm.chart_identity(params["chart"], version, params.get("repo_url"))
        wanted_values = _normalized(params["values"])
        reasons = []
        if current is None:
            reasons.append("not installed")
        else:
            if current.chart != wanted_chart:
                reasons.append(f"chart {current.chart} -> {wanted_chart}")
            if _normalized(current.values) != wanted_values:
                reasons.append("values differ")
            if current.status != "deployed":
                reasons.append(f"release status is {current.status}")
        result.update({"chart": wanted_chart, "changed": bool(reasons), "reasons": reasons})
        if ctx.diff and reasons:
            result["diff"] = {
                "before": _yaml(current.values) if current else "", "after": _yaml(wanted_values),
                "before_header": f"values of {current.chart if current else '(not installed)'}",
                "after_header": f"values of {wanted_chart}",
            }
        if not reasons or ctx.check_mode:
            if current is not None:
                result["revision"] = current.revision
            return result
        deployed = helm.upgrade(release, namespace, params["chart"], version, params.get("repo_url"), wanted_values,
                                params["wait"])
        result.update({"revision": deployed.revision, "status": deployed.status})
        return result
    except HelmError as exc:
        raise TaskFailed(str(exc)) from None


SPEC = TaskSpec("helm_release", ARGUMENT_SPEC, run, connection=False)
