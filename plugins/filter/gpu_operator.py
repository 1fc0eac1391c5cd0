# Jinja filters of the gpu_operator role (documented in gpu_operator_values.yml); the logic lives in the
# collection's Python core, migrollout.operator_values.
from __future__ import annotations

import json

from ansible.errors import AnsibleFilterError


def gpu_operator_values(strategy, chart_path=None, **options):
    """{{ k8s_gpu_mig_strategy | nvidia_mig.rollout.gpu_operator_values(driver=..., mig_configs=..., ...) }}"""
    try:
        from migrollout.operator_values import MigConfigsRefused, build_values, chart_versions
    except ImportError as exc:
        raise AnsibleFilterError(f"gpu_operator_values needs the nvidia-mig-rollout Python package (pip install -r "
                                 f"the collection's requirements.txt): {exc}") from None
    # Plain data in (templated values arrive as Ansible's tagged types), plain data out.
    options = json.loads(json.dumps(options))
    if chart_path:
        # A chart on disk says itself which release it is and which MIG manager it deploys.
        options["chart_version"], options["mig_manager_version"] = chart_versions(str(chart_path))
    try:
        return build_values(str(strategy), **options)
    except MigConfigsRefused as exc:
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    def filters(self):
        return {"gpu_operator_values": gpu_operator_values}
