# Jinja filters of the gpu_operator role; the logic lives in migrollout.operator_values.
from migrollout.operator_values import build_values


def gpu_operator_values(strategy, **options):
    """{{ k8s_gpu_mig_strategy | gpu_operator_values(driver=..., mig_configs=..., ...) }}"""
    return build_values(strategy, **options)


class FilterModule:
    def filters(self):
        return {"gpu_operator_values": gpu_operator_values}
