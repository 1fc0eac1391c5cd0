# Jinja filters of the gpu_operator role; the logic lives in migrollout.operator_values.
import json

from migrollout.operator_values import build_values


def gpu_operator_values(strategy, **options):
    """{{ k8s_gpu_mig_strategy | gpu_operator_values(driver=..., mig_configs=..., ...) }}"""
    # Plain data in (templated values arrive as Ansible's tagged types), plain data out.
    return build_values(str(strategy), **json.loads(json.dumps(options)))


class FilterModule:
    def filters(self):
        return {"gpu_operator_values": gpu_operator_values}
