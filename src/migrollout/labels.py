"""Label and annotation names of the NVIDIA stack and of this toolkit, in one place."""

MIG_CONFIG = "nvidia.com/mig.config"
MIG_CONFIG_STATE = "nvidia.com/mig.config.state"
MIG_STATES = ("pending", "rebooting", "success", "failed")
MIG_FINAL_STATES = ("success", "failed")

GPU_PRESENT = "nvidia.com/gpu.present"
GPU_PRODUCT = "nvidia.com/gpu.product"
GPU_COUNT = "nvidia.com/gpu.count"
MIG_CAPABLE = "nvidia.com/mig.capable"
MIG_STRATEGY = "nvidia.com/mig.strategy"

DEPLOY_PREFIX = "nvidia.com/gpu.deploy."
DEPLOY_MIG_MANAGER = DEPLOY_PREFIX + "mig-manager"
# The operand labels the MIG manager pauses during a change, in its order.
PAUSABLE_OPERANDS = ("device-plugin", "gpu-feature-discovery", "dcgm-exporter", "dcgm", "nvsm", "client")
# The operand labels the operator sets on every GPU node.
OPERATOR_OPERANDS = (
    "driver", "gpu-feature-discovery", "container-toolkit", "device-plugin", "dcgm", "dcgm-exporter",
    "node-status-exporter", "operator-validator",
)
PAUSED = "paused-for-mig-change"

# node-feature-discovery: a PCI device of vendor 10de (NVIDIA) is present.
NFD_NVIDIA_PCI = (
    "feature.node.kubernetes.io/pci-10de.present",
    "feature.node.kubernetes.io/pci-0302_10de.present",
    "feature.node.kubernetes.io/pci-0300_10de.present",
)

# Extended resources the device plugin advertises: whole GPUs, and MIG devices per profile (mixed strategy).
GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"


def is_gpu_resource(name: str) -> bool:
    """An NVIDIA GPU resource: what makes a pod a GPU workload and a node's allocatable GPU capacity."""
    return name == GPU_RESOURCE or name.startswith(MIG_RESOURCE_PREFIX)


# Operand pods, by their app label, as the operator names them.
APP_DEVICE_PLUGIN = "nvidia-device-plugin-daemonset"
APP_GFD = "gpu-feature-discovery"
APP_MIG_MANAGER = "nvidia-mig-manager"
APP_DCGM_EXPORTER = "nvidia-dcgm-exporter"
APP_DCGM = "nvidia-dcgm"

# This toolkit's own annotations.
TOOLKIT_DOMAIN = "mig-rollout.nvidia-mig-rollout.io"
ROLLOUT_RECORD = f"{TOOLKIT_DOMAIN}/record"
