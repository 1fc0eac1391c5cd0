# Jinja filters of the gpu_operator role (documented in gpu_operator_values.yml); the logic lives in the
# collection's Python core, migrollout.operator_values.
from __future__ import annotations

import json

from ansible.errors import AnsibleFilterError


def gpu_operator_values(strategy, **options):
    """{{ k8s_gpu_mig_strategy | nvidia_mig.rollout.gpu_operator_values(driver=..., mig_configs=..., ...) }}"""
    try:
        from migrollout.operator_values import build_values
    except ImportError as exc:
        raise AnsibleFilterError(f"gpu_operator_values needs the nvidia-mig-rollout Python package (pip install the "
                                 f"collection's directory): {exc}") from None
    # Plain data in (templated values arrive as Ansible's tagged types), plain data out.
    return build_values(str(strategy), **json.loads(json.dumps(options)))


class FilterModule:
    def filters(self):
        return {"gpu_operator_values": gpu_operator_values}
