#!/usr/bin/python
# helm_release: install, upgrade or uninstall one Helm release, reporting a change only when there is one.
# Docs, argument spec and the adapter to the core (migrollout) in one file; see plugins/module_utils/kube_task.py.

from __future__ import annotations

DOCUMENTATION = r"""
module: helm_release
short_description: Install, upgrade or uninstall a Helm release with the helm CLI, reporting honest changes
description:
  - Drives the real C(helm) command for one release.
  - With O(state=present), installs or upgrades the release only when it is missing, its chart
    (name and version) differs from the one asked for, its user-supplied values differ from O(values),
    or its last operation did not end in C(deployed). Otherwise nothing runs and C(changed) is false.
  - Values are passed as a whole (C(--reset-values)), so a value removed from O(values) is removed from the release.
  - With O(state=absent), uninstalls the release if it exists.
  - A missing C(helm), an unreachable chart or cluster becomes one sentence from helm's own error.
version_added: "0.1.0"
requirements:
  - helm v3 on the control host (O(helm_binary))
  - the C(nvidia-mig-rollout) Python package
seealso:
  - module: nvidia_mig.rollout.gpu_operator_wait
options:
  name:
    description: Release name.
    type: str
    required: true
  namespace:
    description: Release namespace (created if missing).
    type: str
    required: true
  chart:
    description:
      - The chart, as helm takes it, a name in O(repo_url) (C(gpu-operator)), C(repo/name), a local path
        (air-gapped sites) or an C(oci://) reference.
      - Required with O(state=present).
    type: str
  chart_version:
    description:
      - The chart version, as a string (C('v26.7.0')). A number is refused, since YAML reads 26.10 as the number 26.1.
      - Omit to take the chart's latest version, or a local chart's own version.
    type: raw
  repo_url:
    description: The chart repository URL (C(https://helm.ngc.nvidia.com/nvidia) or a mirror), used with C(--repo).
    type: str
  values:
    description: The release's values.
    type: dict
    default: {}
  state:
    description: Whether the release should be installed.
    type: str
    default: present
    choices: [present, absent]
  wait:
    description: Pass C(--wait) to helm.
    type: bool
    default: false
  timeout:
    description: Seconds helm may take.
    type: int
    default: 600
  registry:
    description:
      - A registry that mirrors the chart's images. Every image repository in the chart's default values and
        its subcharts' (any mapping with a C(repository) key) is pulled from it instead, its path kept
        (C(nvcr.io/nvidia/cloud-native) becomes C(<registry>/nvidia/cloud-native), C(registry.k8s.io/nfd/x)
        becomes C(<registry>/nfd/x)).
      - Read from the chart being installed (pulled into a temporary directory when it is not on disk), so a
        chart release that moves an image needs no change here. O(values) win over the mirror's.
    type: str
  allow_driver_restart:
    description:
      - For the GPU Operator's release - whether a change that makes NVIDIA's driver upgrade controller restart the
        GPU driver on every GPU node may go ahead. Such a change is one to the chart version, or to chart values
        that reach the driver DaemonSet's pod template (C(driver.*) except C(driver.upgradePolicy), and
        C(daemonsets.*) such as C(daemonsets.tolerations)), while the operator manages the driver with
        C(driver.upgradePolicy.autoUpgrade) on. The controller then cordons each node, deletes its GPU pods and
        restarts its driver, a few nodes at a time.
      - V(false) refuses such a change before anything is changed, naming what restarts the driver; check mode
        names it as a warning. V(true) goes ahead, with the same warning. Unset, nothing is checked (another chart).
      - A first install restarts nothing, whatever it sets.
    type: bool
  helm_binary:
    description: The helm executable (a name on PATH or a path).
    type: str
    default: helm
  kubeconfig:
    description: Path to a kubeconfig file for helm (default, helm's own rules, E(KUBECONFIG)).
    type: path
  context:
    description: The kubeconfig context.
    type: str
attributes:
  check_mode:
    support: full
    description: Compares the deployed release with the one asked for and changes nothing.
  diff_mode:
    support: full
    description: Shows the user-supplied values before and after.
notes:
  - Runs on the control host; there it runs in-process through the toolkit's action plugin.
author: NVIDIA MIG rollout toolkit maintainers (@nvidia-mig-rollout)
"""

EXAMPLES = r"""
- name: Install the GPU Operator with the mixed MIG strategy
  helm_release:
    name: gpu-operator
    namespace: gpu-operator
    chart: gpu-operator
    repo_url: https://helm.ngc.nvidia.com/nvidia
    chart_version: v26.7.0
    values:
      mig: {strategy: mixed}
"""

RETURN = r"""
name:
  description: Release name.
  returned: always
  type: str
namespace:
  description: Release namespace.
  returned: always
  type: str
chart:
  description: The chart asked for, as C(<name>-<version>).
  returned: state=present
  type: str
  sample: gpu-operator-v26.7.0
driver_restart:
  description: Why the change restarts the GPU driver on every GPU node (see O(allow_driver_restart)); empty when it
    does not.
  returned: state=present and O(allow_driver_restart) set
  type: list
  elements: str
  sample: ["daemonsets.tolerations changes from None to [{'key': 'mig', 'operator': 'Exists'}]"]
reasons:
  description: Why the release was (or, in check mode, would be) installed or upgraded.
  returned: state=present
  type: list
  elements: str
  sample: [values differ]
revision:
  description: The release revision after the task.
  returned: when installed
  type: int
status:
  description: The release status after an install or upgrade.
  returned: when changed
  type: str
"""

import json
import tempfile
from typing import Any

from ansible_collections.nvidia_mig.rollout.plugins.module_utils.kube_task import (
    TaskContext,
    TaskFailed,
    TaskSpec,
    run_module,
)

try:
    import yaml

    from migrollout import driver_upgrade
    from migrollout.chart_images import ChartError, chart_values, mirror_overrides
    from migrollout.helm import Helm, HelmError
    from migrollout.operator_values import deep_merge
except ImportError:  # run_module reports the missing package
    pass

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
    "registry": {"type": "str"},
    "allow_driver_restart": {"type": "bool"},
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
        values = params["values"]
        if params.get("registry"):
            with tempfile.TemporaryDirectory() as scratch:
                chart_dir = helm.pull(params["chart"], version, params.get("repo_url"), scratch)
                # Explicit values win over the mirror's (an image the caller points elsewhere on purpose).
                values = deep_merge(mirror_overrides(chart_values(chart_dir), params["registry"]), values)
        wanted_values = _normalized(values)
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
        allow = params.get("allow_driver_restart")
        if allow is not None:
            restarts = driver_upgrade.restart_reasons(current.values if current else None, wanted_values,
                                                      current.chart if current else "", wanted_chart)
            result["driver_restart"] = restarts
            if restarts:
                sentence = driver_upgrade.restart_sentence(restarts)
                if not allow and not ctx.check_mode:
                    raise TaskFailed(f"release {namespace}/{release} was not changed: {sentence}. Set "
                                     f"allow_driver_restart (gpu_operator_allow_driver_restart: true) to go ahead; "
                                     f"a MIG rollout started meanwhile waits for it", **result)
                ctx.warn(f"release {namespace}/{release}: {sentence}"
                         + ("" if allow else "; the real run refuses it unless allow_driver_restart is true"))
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
    except (HelmError, ChartError) as exc:
        raise TaskFailed(str(exc)) from None


SPEC = TaskSpec("helm_release", ARGUMENT_SPEC, run, connection=False)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
