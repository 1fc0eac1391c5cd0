#!/usr/bin/python
# Thin adapter: the logic lives in migrollout.tasks.helm_release and migrollout.helm.

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
author: NVIDIA MIG rollout toolkit maintainers
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

from ansible.module_utils.migrollout_loader import run_task


def main():
    run_task("migrollout.tasks.helm_release")


if __name__ == "__main__":
    main()
